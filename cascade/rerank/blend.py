"""Blending the reranker's ranking with the first stage's, so an out-of-domain reranker cannot undo recall.

The reranked head is ordered by 1/(K + reranker rank) + beta/(K + first-stage rank): reciprocal rank
fusion of the two rankings, with K the first stage's own RRF constant. beta = 0 is the reranker alone.
Chosen on dev only (benchmarks/rerank_blend_dev.py): beta = 1 lifted SciFact's held-out train queries
from 0.779 (reranker alone) to 0.810 nDCG@10 and NFCorpus dev from 0.284 to 0.326 (first stage: 0.767,
0.327), where no other beta did better on both (`settings.DEFAULT_BLEND`).
"""

from __future__ import annotations

import numpy as np

from cascade.retrieve.hybrid import RRF_K as K

# A tie-break far below any real gap: two sums of 1/(60 + rank) terms (ranks <= 1000, beta 1) that differ at all
# differ by >= 1/1060^4 = 7.9e-13. float64 resolves it; float32 could not.
TIE = 1e-13


def blended_scores(scores: np.ndarray, first_ranks: np.ndarray, beta: float, ties: str = "reranker") -> np.ndarray:
    """The blended score of each item, given its reranker score and its 1-based first-stage rank.

    With beta = 1 the sum is symmetric: first-stage rank 1 + reranker rank 2 scores exactly what 2 + 1 does.
    `ties="reranker"` (what search does) breaks such ties by the reranker's rank, so a reranker right about the
    top two can show it; `"first"` leaves them to a stable sort in first-stage order (what search did before).
    Chosen on dev (benchmarks/reranker_domains.py): NFCorpus 0.3262 -> 0.3266, SciFact unchanged at 0.8109."""
    if beta == 0:
        return scores.astype(np.float32)
    rerank_ranks = np.empty(len(scores))
    rerank_ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    blended = 1 / (K + rerank_ranks) + beta / (K + np.asarray(first_ranks, dtype=np.float64))
    return blended + TIE / (K + rerank_ranks) if ties == "reranker" else blended.astype(np.float32)
