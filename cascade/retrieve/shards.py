"""Fan-out search over shards: each shard returns its own top k, the merge keeps the best k overall.

Shards hold consecutive passages, so global index = shard start + local index. Merging orders by
score, then by global index: the same tie-break as one unsharded `top_k`, so an exact search over
shards returns exactly what it returns over one index.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

Ranking = tuple[np.ndarray, np.ndarray]
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cascade-shard")


def merge(results: Sequence[Ranking], starts: Sequence[int], k: int) -> Ranking:
    """The best k of every shard's (local indices, scores), as (global indices, scores)."""
    if len(results) == 1:
        return results[0][0][:k].astype(np.int64) + int(starts[0]), results[0][1][:k]
    ids = np.concatenate([r[0].astype(np.int64) + int(s) for r, s in zip(results, starts)])
    scores = np.concatenate([r[1] for r in results]).astype(np.float32)
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


class FanOut:
    """Shards' retrievers (BM25 or dense) searched as one: `search(query, k)` in parallel threads."""

    def __init__(self, parts: Sequence, starts: Sequence[int]):
        self.parts, self.starts = list(parts), list(starts)

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    def _each(self, method: str, query, k: int) -> Ranking:
        if len(self.parts) == 1:
            return merge([getattr(self.parts[0], method)(query, k)], self.starts, k)
        return merge(list(_POOL.map(lambda p: getattr(p, method)(query, k), self.parts)), self.starts, k)

    def search(self, query, k: int) -> Ranking:
        return self._each("search", query, k)


class BM25FanOut(FanOut):
    def search(self, query: str, k: int) -> Ranking:
        """The query is analysed once: shards share the collection's term ids."""
        return self._each("search", self.parts[0].terms(query), k)


class DenseFanOut(FanOut):
    @property
    def dim(self) -> int:
        return self.parts[0].dim

    def vectors(self) -> np.ndarray:
        return np.concatenate([p.vectors() for p in self.parts])

    def exact(self, query_vector: np.ndarray, k: int) -> Ranking:
        """The true top k (a full scan of every shard): what `cascade eval` measures ANN recall against."""
        return self._each("exact", query_vector, k)

    def recall(self, query_vector: np.ndarray, k: int) -> float:
        """ANN Recall@k: the share of the exact top k that `search` also returns."""
        exact = self.exact(query_vector, k)[0]
        return len(np.intersect1d(self.search(query_vector, k)[0], exact)) / max(1, len(exact))
