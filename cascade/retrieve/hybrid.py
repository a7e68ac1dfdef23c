"""Fusing first-stage rankings: reciprocal rank fusion (default) or weighted normalised scores.

Both are pure functions over (indices, scores) arrays so they can be tested and swapped freely.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cascade.errors import CascadeError

Ranking = tuple[np.ndarray, np.ndarray]  # (passage indices best first, scores)
FUSIONS = ("rrf", "weighted")
RRF_K = 60.0  # Cormack et al.'s constant; the reranker blend (rerank/blend.py) uses the same


def _accumulate(ids: Sequence[np.ndarray], contributions: Sequence[np.ndarray]) -> Ranking:
    if not ids or sum(len(i) for i in ids) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    all_ids = np.concatenate(ids).astype(np.int64)
    uniq, inverse = np.unique(all_ids, return_inverse=True)
    total = np.zeros(len(uniq), dtype=np.float64)
    np.add.at(total, inverse, np.concatenate(contributions).astype(np.float64))
    order = np.lexsort((uniq, -total))
    return uniq[order], total[order]


def rrf(rankings: Sequence[Ranking], k: float = RRF_K) -> Ranking:
    """Reciprocal rank fusion (Cormack et al., 2009): score = sum over lists of 1 / (k + rank)."""
    if k <= 0:
        raise CascadeError(f"RRF constant k must be > 0, got {k}")
    ids = [r[0] for r in rankings]
    return _accumulate(ids, [1.0 / (k + np.arange(1, len(i) + 1)) for i in ids])


def minmax(scores: np.ndarray) -> np.ndarray:
    """Scale scores to [0, 1]; a list whose scores are all equal maps to 1."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return scores
    lo, hi = scores.min(), scores.max()
    return np.ones_like(scores) if hi == lo else (scores - lo) / (hi - lo)


def weighted(rankings: Sequence[Ranking], weights: Sequence[float]) -> Ranking:
    """Weighted sum of min-max normalised scores; a passage missing from a list gets 0 there."""
    if len(weights) != len(rankings):
        raise CascadeError(f"need one weight per ranking: {len(rankings)} rankings, {len(weights)} weights")
    if any(w < 0 for w in weights) or sum(weights) == 0:
        raise CascadeError(f"fusion weights must be >= 0 and not all 0, got {list(weights)}")
    return _accumulate([r[0] for r in rankings], [w * minmax(r[1]) for r, w in zip(rankings, weights)])


def fuse(method: str, bm25: Ranking, dense: Ranking, limit: int, alpha: float = 0.5, rrf_k: float = RRF_K) -> Ranking:
    """Fuse the lexical and dense rankings and keep the best `limit`.

    `alpha` is the dense weight for weighted fusion (BM25 gets 1 - alpha).
    """
    if method == "rrf":
        ids, scores = rrf([bm25, dense], k=rrf_k)
    elif method == "weighted":
        if not 0.0 <= alpha <= 1.0:
            raise CascadeError(f"alpha must be in [0, 1], got {alpha}")
        ids, scores = weighted([bm25, dense], [1.0 - alpha, alpha])
    else:
        raise CascadeError(f"unknown fusion {method!r} (choose from {', '.join(FUSIONS)})")
    return ids[:limit], scores[:limit]
