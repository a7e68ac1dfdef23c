"""Ranking metrics with trec_eval semantics, so our numbers are comparable with BEIR tables and papers."""

from __future__ import annotations

import re
from functools import partial
from typing import Callable, Sequence

import numpy as np

from cascade.errors import CascadeError

Run = dict[str, dict[str, float]]  # query id -> {doc id: score}
Qrels = dict[str, dict[str, int]]  # query id -> {doc id: graded relevance}
Metric = Callable[[list[str], dict[str, int]], float]  # (ranking, rels) -> value


def ranked(docs: dict[str, float]) -> list[str]:
    """Doc ids best first, tied scores by doc id descending: trec_eval's order, so ties score the same as there."""
    return sorted(docs, key=lambda d: (docs[d], d), reverse=True)


def _gains(ranking: list[str], rels: dict[str, int], k: int) -> np.ndarray:
    """Relevance of the top k (unjudged and negative count as 0): the one vector every metric reads."""
    return np.array([max(rels.get(d, 0), 0) for d in ranking[:k]], dtype=np.float64)


def _dcg(gains: np.ndarray) -> float:
    return float(gains @ (1.0 / np.log2(np.arange(2, gains.size + 2))))


def ndcg_at(ranking: list[str], rels: dict[str, int], k: int) -> float:
    """trec_eval ndcg_cut.k: linear gains, ideal from every judged relevant doc, so unretrieved ones still count."""
    ideal = np.sort(np.array([r for r in rels.values() if r > 0], dtype=np.float64))[::-1][:k]
    if not ideal.size:
        return 0.0
    return _dcg(_gains(ranking, rels, k)) / _dcg(ideal)


def mrr_at(ranking: list[str], rels: dict[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant doc in the top k (BEIR's MRR@k), 0 if none is there."""
    hits = np.flatnonzero(_gains(ranking, rels, k))
    return 1.0 / float(hits[0] + 1) if hits.size else 0.0


def recall_at(ranking: list[str], rels: dict[str, int], k: int) -> float:
    """trec_eval recall.k: share of the relevant docs found in the top k; 0 when the query has none."""
    relevant = sum(r > 0 for r in rels.values())
    return np.count_nonzero(_gains(ranking, rels, k)) / relevant if relevant else 0.0


def precision_at(ranking: list[str], rels: dict[str, int], k: int) -> float:
    """trec_eval P.k: relevant docs in the top k over k, even when fewer than k were retrieved."""
    return np.count_nonzero(_gains(ranking, rels, k)) / k


_KINDS: dict[str, Callable[[list[str], dict[str, int], int], float]] = {
    "ndcg": ndcg_at, "mrr": mrr_at, "recall": recall_at, "p": precision_at}


def metric_fn(name: str) -> Metric:
    """The metric called `name` ("ndcg@10", "recall@1000", ...), so callers can ask for any cutoff by name."""
    match = re.fullmatch(r"([a-z]+)@([1-9][0-9]*)", name)
    if not match or match[1] not in _KINDS:
        supported = ", ".join(f"{kind}@K" for kind in _KINDS)
        raise CascadeError(f"unknown metric {name!r}: supported are {supported} (K a positive integer)")
    return partial(_KINDS[match[1]], k=int(match[2]))


METRICS: dict[str, Metric] = {name: metric_fn(name) for name in ("ndcg@10", "mrr@10", "recall@100", "p@5")}


def per_query(run: Run, qrels: Qrels, names: list[str]) -> dict[str, dict[str, float]]:
    """metric name -> {qid: value} over every judged query; one missing from the run scores 0 rather than
    being skipped (trec_eval skips it), so a retriever cannot look better by returning nothing."""
    fns = {name: metric_fn(name) for name in names}
    rankings = {qid: ranked(run.get(qid, {})) for qid in qrels}
    return {name: {qid: fn(rankings[qid], rels) for qid, rels in qrels.items()} for name, fn in fns.items()}


def mean(values: dict[str, float]) -> float:
    """Average over queries; 0.0 for none, so an empty evaluation reports a number instead of NaN."""
    return float(np.mean(list(values.values()))) if values else 0.0


def paired_bootstrap(before: Sequence[float], after: Sequence[float], samples: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """(mean of after - before, low, high): the change between two systems on the same queries and its
    bootstrap confidence interval (queries resampled with replacement, percentile bounds), seeded so a report
    is reproducible. An interval that holds 0 says the queries cannot tell the two apart: SciFact's 81 dev
    queries once preferred a model that its 300 test queries ranked 0.01 lower."""
    if len(before) != len(after) or not len(before):
        raise CascadeError(f"paired_bootstrap needs two equally long, non-empty lists of per-query values "
                           f"(got {len(before)} and {len(after)})")
    diff = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(samples, diff.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(diff.mean()), float(low), float(high)
