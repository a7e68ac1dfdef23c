"""Dev scoring for checkpoint choice: rerank each dev query's first-stage candidates, score nDCG@10.

Selection reads the mean over dev sources (data sets), never the pooled mean, so a large domain cannot
outvote a small one; and it reads the cascade as search runs it, the reranker blended with the first
stage (rerank/blend.py), with the reranker alone reported beside it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from cascade.evaluate.metrics import ndcg_at, ranked
from cascade.rerank.blend import blended_scores
from cascade.rerank.cross_encoder import CrossEncoder
from cascade.settings import DEFAULT_BLEND
from cascade.train.data import DevQuery

VIEWS = ("first_stage", "alone", "blended", "blended_ties_first")


def query_ndcg(q: DevQuery, scores: np.ndarray) -> float:
    """nDCG@10 of a dev query's candidates ordered by `scores`; a document scores its best passage (MaxP)."""
    run: dict[str, float] = {}
    for (doc, _), s in sorted(zip(q.candidates, scores.tolist()), key=lambda x: -x[1]):
        run.setdefault(doc, s)
    return ndcg_at(ranked(run), q.rels, 10)


def dev_values(scorer: CrossEncoder | None, dev: Sequence[DevQuery], blend: float = DEFAULT_BLEND,
               batch_size: int = 16) -> dict[str, dict[str, list[float]]]:
    """Per source and view, each query's nDCG@10 in `dev` order: what a paired comparison of two rerankers
    on the same queries reads (`cascade.evaluate.metrics.paired_bootstrap`)."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: {view: [] for view in VIEWS})
    for q in dev:
        first = -np.arange(len(q.candidates), dtype=float)
        scores = first if scorer is None else scorer.predict([(q.query, t) for _, t in q.candidates],
                                                             batch_size=batch_size, raw_scores=True)
        ranks = np.arange(1, len(q.candidates) + 1)
        row = values[q.source]
        row["first_stage"].append(query_ndcg(q, first))
        row["alone"].append(query_ndcg(q, scores))
        row["blended"].append(query_ndcg(q, blended_scores(np.asarray(scores), ranks, blend)))
        row["blended_ties_first"].append(query_ndcg(q, blended_scores(np.asarray(scores), ranks, blend, ties="first")))
    return dict(values)


def dev_report(scorer: CrossEncoder | None, dev: Sequence[DevQuery], blend: float = DEFAULT_BLEND,
               batch_size: int = 16) -> dict[str, dict[str, float]]:
    """Per source, the mean nDCG@10 of the first stage, the reranker alone and the blended cascade
    (without a scorer, all three are the first stage's)."""
    return {source: {view: float(np.mean(v)) for view, v in row.items()}
            for source, row in dev_values(scorer, dev, blend, batch_size).items()}


def selection_score(report: dict[str, dict[str, float]], view: str = "blended") -> float:
    """The mean over sources of one view: what checkpoint choice maximises."""
    return float(np.mean([row[view] for row in report.values()])) if report else 0.0
