"""Top-k selection: a partial sort, then a full sort of just the k survivors.

Ties are broken by lower index everywhere, at the cut too, so a merge of shards' top k equals the
top k of the whole."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k largest scores, best first; ties broken by lower index."""
    k = min(k, len(scores))
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    if k < len(scores):  # the k-th best score, then everything above it and the lowest-indexed ties at it
        kth = -np.partition(-scores, k - 1)[k - 1]
        above = np.flatnonzero(scores > kth)
        idx = np.concatenate([above, np.flatnonzero(scores == kth)[: k - len(above)]])
    else:
        idx = np.arange(len(scores))
    idx = idx[np.lexsort((idx, -scores[idx]))]
    return idx.astype(np.int64), scores[idx].astype(np.float32)
