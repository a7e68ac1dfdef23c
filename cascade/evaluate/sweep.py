"""Rerank depth sweep: how much quality each extra reranked candidate buys, and what it costs.

Quality: each query's top max(depths) fused candidates are scored once; depth d reranks the first d
of them by those scores (a pair's score does not depend on what else is in the batch). Latency: the
real rerank stage, timed at every depth on the first `latency_queries` queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from cascade.errors import CascadeError
from cascade.evaluate.beir import Split
from cascade.evaluate.metrics import mean, per_query
from cascade.evaluate.runner import RUN_DEPTH, doc_run
from cascade.pipeline import Cascade
from cascade.rerank.blend import blended_scores
from cascade.settings import UNBUDGETED, SearchSettings

TOLERANCE = 0.005


@dataclass
class SweepResult:
    dataset: str
    split: str
    queries: int
    rows: list[dict]  # {"depth", "ndcg@10", "latency_ms": {"p50", "p95"}}
    baseline: dict  # first stage, no rerank
    best: int
    suggested: int
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "queries": self.queries, "settings": self.settings,
                "first_stage": self.baseline, "depths": self.rows, "best_depth": self.best,
                "suggested_depth": self.suggested}


def parse_depths(text: str) -> list[int]:
    try:
        depths = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise CascadeError(f"--depths must be comma-separated integers, got {text!r}") from None
    if not depths or depths[0] < 1:
        raise CascadeError(f"--depths must be integers >= 1, got {text!r}")
    return depths


def suggest(rows: Sequence[dict], tolerance: float = TOLERANCE) -> tuple[int, int]:
    """(best depth, smallest depth within `tolerance` nDCG@10 of the best)."""
    best = max(rows, key=lambda r: r["ndcg@10"])
    return best["depth"], min(r["depth"] for r in rows if r["ndcg@10"] >= best["ndcg@10"] - tolerance)


def sweep(cascade: Cascade, split: Split, depths: Sequence[int], settings: SearchSettings | None = None,
          limit: int | None = None, latency_queries: int = 20, progress: bool = True, **changes) -> SweepResult:
    """nDCG@10 and rerank latency at each depth, other settings as in `settings` (no budget by default); with
    `late_depth`, the cross-encoder reranks the head of the late-interaction order instead of the fused one."""
    if cascade.reranker is None:
        raise CascadeError(f"a depth sweep needs a reranker: {cascade.rerank_unavailable}")
    s = (settings or UNBUDGETED).replace(**{"rerank_depth": 0, **changes})  # the depths swept are the rerank depths
    retrieve, late_depth, blend = s.retrieve, s.late_depth, s.blend
    depths = sorted(depths)
    if depths[-1] > retrieve:
        raise CascadeError(f"depth {depths[-1]} exceeds --retrieve {retrieve}; retrieve at least as many candidates")
    if late_depth and depths[-1] > late_depth:
        raise CascadeError(f"depth {depths[-1]} exceeds --late-depth {late_depth}: the cross-encoder reranks the "
                           "head of the late-interaction order")
    qids = list(split.queries)[:limit] if limit else list(split.queries)
    passages = cascade.index.passages
    runs: dict[int, dict] = {d: {} for d in [0, *depths]}
    for qid in tqdm(qids, desc=f"sweeping {split.name}/{split.split}", unit="q", disable=not progress):
        # raw scores once, at the deepest depth; each depth's blend below
        r = cascade.run_stages(split.queries[qid], s, rerank_depth=depths[-1], blend=0)
        fused = np.concatenate([r.heads["late"][0], r.fusion[0][late_depth:]]) if late_depth else r.fusion[0]
        score = dict(zip(*(a.tolist() for a in r.heads["rerank"])))
        runs[0][qid] = doc_run(passages, fused, -np.arange(len(fused), dtype=float), RUN_DEPTH)
        for d in depths:
            final = blended_scores(np.array([score[i] for i in fused[:d]]), np.arange(1, d + 1), blend)
            head = fused[:d][np.argsort(-final, kind="stable")]
            order = np.concatenate([head, fused[d:]]).astype(np.int64)
            runs[d][qid] = doc_run(passages, order, -np.arange(len(order), dtype=float), RUN_DEPTH)
    qrels = {q: split.qrels[q] for q in qids}
    ndcg = {d: mean(per_query(runs[d], qrels, ["ndcg@10"])["ndcg@10"]) for d in runs}
    timing_qids = qids[:latency_queries]
    latency: dict[int, list[float]] = {d: [] for d in depths}
    for qid in tqdm(timing_qids, desc="timing rerank depths", unit="q", disable=not progress):
        for d in depths:
            t = cascade.run_stages(split.queries[qid], s, rerank_depth=d).timings_ms
            latency[d].append(t["rerank"])
    rows = [{"depth": d, "ndcg@10": ndcg[d], "latency_ms": {"p50": float(np.percentile(latency[d], 50)),
                                                            "p95": float(np.percentile(latency[d], 95))}}
            for d in depths]
    best, suggested = suggest(rows)
    return SweepResult(dataset=split.name, split=split.split, queries=len(qids), rows=rows,
                       baseline={"ndcg@10": ndcg[0]}, best=best, suggested=suggested,
                       settings={"retrieve": retrieve, "late_depth": late_depth, "fusion": s.fusion,
                                 "reranker": cascade.reranker.model_id,
                                 "blend": blend, "latency_queries": len(timing_qids), "tolerance": TOLERANCE})
