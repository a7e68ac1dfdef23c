"""Run the cascade over a labelled split and score every stage at the document level.

Passages are what the cascade ranks; BEIR judges documents. A document's score at a stage is the
best score of its passages (MaxP), so each stage's passage ranking becomes a document run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from cascade.documents import Passage, load_documents
from cascade.errors import CascadeError
from cascade.evaluate.beir import Split
from cascade.evaluate.chains import CHAIN, STAGES, chain, eval_settings, parse_stages
from cascade.evaluate.metrics import mean, per_query
from cascade.fileio import cache_root
from cascade.index import MANIFEST, read_manifest
from cascade.pipeline import Cascade, RerankerSpec
from cascade.results import StageRuns
from cascade.settings import IndexSettings, SearchSettings

RUN_DEPTH = 1000  # documents kept per query in first-stage runs, as BEIR/trec_eval runs do
Run = dict[str, dict[str, float]]


@dataclass
class StageResult:
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    latency_ms: dict[str, float]
    run: Run = field(repr=False)


@dataclass
class EvalResult:
    dataset: str
    split: str
    queries: int
    settings: dict
    stages: dict[str, StageResult]
    rerank_status: dict

    def metric_names(self) -> list[str]:
        return list(next(iter(self.stages.values())).metrics)


def default_index_dir(data: Path) -> Path:
    """A per-dataset cache folder, so repeated evaluations reuse the embeddings."""
    base = cache_root() / "eval"
    digest = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:10]
    return base / f"{data.resolve().name}-{digest}"


def open_cascade(data: Path, index_dir: Path | None, reranker: RerankerSpec, device: str | None = None,
                 passage_words: int | None = None, overlap: int | None = None, progress: bool = True,
                 late_interaction: str | bool | None = None) -> Cascade:
    """Build (or incrementally refresh) the dataset's index, then load it with the reranker.

    `late_interaction` as in `Cascade.build`: True adds token vectors when the index has none yet.
    No score cache: a sweep revisits the same queries, and cached scores would hide the reranker's cost.
    The per-dataset cache (no `index_dir`) is re-chunked to today's defaults, not kept at the settings it was
    first built with, as a user's index is."""
    docs = load_documents(data)
    if index_dir is None:
        defaults = IndexSettings()
        passage_words = defaults.passage_words if passage_words is None else passage_words
        overlap = defaults.overlap if overlap is None else overlap
    index_dir = index_dir or default_index_dir(data)
    if late_interaction is True and (index_dir / MANIFEST).is_file():
        try:
            if "late_interaction" in read_manifest(index_dir):
                late_interaction = None  # keep the model the index already has
        except CascadeError:  # unreadable: the build below starts over
            pass
    return Cascade.build(docs, index_dir, reranker=reranker, device=device,
                         passage_words=passage_words, overlap=overlap, source=str(data.resolve()),
                         progress=progress, cache=None, late_interaction=late_interaction)


ANN_RECALL_AT = 200  # the blueprint's ANN target: Recall@200 against exact search on the same queries


def doc_run(passages: Sequence[Passage], ids: np.ndarray, scores: np.ndarray, depth: int) -> dict[str, float]:
    """Passage ranking (best first, scores non-increasing) -> document run of the top `depth` docs (MaxP)."""
    run: dict[str, float] = {}
    for i, s in zip(ids.tolist(), scores.tolist()):
        doc = passages[i].doc_id
        if doc not in run:  # first occurrence is the max: scores are non-increasing
            run[doc] = float(s)
            if len(run) == depth:
                break
    return run


def final_ranking(runs: StageRuns) -> tuple[np.ndarray, np.ndarray]:
    """The reranked list with non-increasing scores: reranked head, then the fused tail below it."""
    head_ids, head_scores = runs.heads["rerank"]
    tail = runs.order[len(head_ids):]
    floor = float(head_scores.min()) if len(head_scores) else 0.0
    return runs.order, np.concatenate([head_scores, floor - 1.0 - np.arange(len(tail))])


def chain_ranking(runs: StageRuns) -> tuple[np.ndarray, np.ndarray]:
    """A chain's final list with non-increasing scores (the cross-encoder's own when it ran last)."""
    if runs.heads.get("rerank") is not None and "llm" not in runs.heads:
        return final_ranking(runs)
    return runs.order, -np.arange(len(runs.order), dtype=np.float64)


def evaluate(cascade: Cascade, split: Split, stages: Sequence[str] = STAGES, settings: SearchSettings | None = None,
             limit: int | None = None, progress: bool = True, **changes) -> EvalResult:
    """Score each requested stage on `split` (optionally its first `limit` queries).

    Each hybrid chain (e.g. hybrid+late+rerank) runs the cascade with just those stages, at the depths in
    `settings` (default `eval_settings(stages)`; `changes` adjust it); its latency is the sum of its stages'
    times, and `<stage>_p50` is each added stage's own time."""
    stages = parse_stages(",".join(stages))
    s = eval_settings(stages, settings, **changes)
    retrieve, rerank_depth = s.retrieve, s.rerank_depth
    if any("rerank" in (chain(x) or ()) for x in stages) and cascade.reranker is None:
        raise CascadeError(f"the rerank stage needs a reranker: {cascade.rerank_unavailable}")
    configs = {x: chain(x) for x in stages if chain(x)}
    qids = list(split.queries)[:limit] if limit else list(split.queries)
    depth_recall = [f"recall@{rerank_depth}"] if rerank_depth else []
    names = list(dict.fromkeys(["ndcg@10", "mrr@10", "recall@100", *depth_recall, f"recall@{retrieve}", "p@5"]))
    runs: dict[str, Run] = {x: {} for x in stages}
    latency: dict[str, list[float]] = {x: [] for x in stages}
    stage_ms: dict[str, dict[str, list[float]]] = {x: {c: [] for c in configs.get(x, ())} for x in stages}
    first_stage_depth = RUN_DEPTH if {"bm25", "dense"} & set(stages) else 0
    passages = cascade.index.passages
    approximate = any(a["kind"] != "flat" for a in cascade.index.manifest.get("ann", []))
    ann_recall = []
    for qid in tqdm(qids, desc=f"evaluating {split.name}/{split.split}", unit="q", disable=not progress):
        query = split.queries[qid]
        r = cascade.run_stages(query, s.replace(late_depth=0, rerank_depth=0, llm_depth=0),
                               first_stage_depth=first_stage_depth)
        t = r.timings_ms
        first = t["bm25"] + t["dense"] + t["fusion"]
        if approximate:
            ann_recall.append(cascade.index.dense.recall(r.query_vector, ANN_RECALL_AT))
        ranked = {"bm25": (r.bm25, t["bm25"]), "dense": (r.dense, t["dense"]), "hybrid": (r.fusion, first)}
        for x, links in configs.items():
            c = cascade.run_stages(query, s.replace(**{f"{stage}_depth": 0 for stage in CHAIN if stage not in links}))
            ranked[x] = (chain_ranking(c), first + sum(c.timings_ms[link] for link in links))
            for link in links:
                stage_ms[x][link].append(c.timings_ms[link])
        for x in stages:
            (ids, scores), ms = ranked[x]
            runs[x][qid] = doc_run(passages, ids, scores, RUN_DEPTH)
            latency[x].append(ms)
    qrels = {q: split.qrels[q] for q in qids}
    results = {}
    for x in stages:
        pq = per_query(runs[x], qrels, names)
        ms = {"p50": float(np.percentile(latency[x], 50)), "p95": float(np.percentile(latency[x], 95))}
        for link, values in stage_ms[x].items():
            ms |= {f"{link}_p50": float(np.percentile(values, 50)), f"{link}_p95": float(np.percentile(values, 95))}
        results[x] = StageResult(metrics={m: mean(v) for m, v in pq.items()}, per_query=pq, latency_ms=ms, run=runs[x])
    return EvalResult(dataset=split.name, split=split.split, queries=len(qids),
                      settings={"retrieve": retrieve, "rerank_depth": rerank_depth, "late_depth": s.late_depth,
                                "llm_depth": s.llm_depth, "fusion": s.fusion, "blend": s.blend,
                                "reranker": cascade.reranker.model_id if cascade.reranker else None,
                                "encoder": cascade.encoder.model_id,
                                "passage_words": cascade.index.manifest["settings"]["passage_words"],
                                "overlap": cascade.index.manifest["settings"]["overlap"],
                                "ann": cascade.index.manifest.get("ann", [])[:1],
                                f"ann_recall@{ANN_RECALL_AT}": float(np.mean(ann_recall)) if ann_recall else None},
                      stages=results, rerank_status={"available": cascade.reranker is not None,
                                                     "reason": cascade.rerank_unavailable})
