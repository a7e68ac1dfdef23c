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


def blended_scores(scores: np.ndarray, first_ranks: np.ndarray, beta: float) -> np.ndarray:
    """The blended score of each item, given its reranker score and its 1-based first-stage rank."""
    if beta == 0:
        return scores.astype(np.float32)
    rerank_ranks = np.empty(len(scores))
    rerank_ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    return (1 / (K + rerank_ranks) + beta / (K + np.asarray(first_ranks))).astype(np.float32)
