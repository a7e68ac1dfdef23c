"""The cross-encoder: reads query and passage together, within the latency budget, through the score cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cascade.rerank import budget
from cascade.rerank.blend import blended_scores
from cascade.rerank.budget import score_within
from cascade.rerank.cache import cache_key
from cascade.settings import SearchSettings
from cascade.stages.base import RerankStatus, StageOutcome

if TYPE_CHECKING:
    from cascade.pipeline import Cascade


class CrossEncoderStage:
    name, depth, always = "rerank", "rerank_depth", True

    def check(self, engine: Cascade) -> None:
        """Nothing to refuse: without a reranker the stage reports itself unavailable and search goes on."""

    def reorder(self, engine: Cascade, query: str, candidates: np.ndarray, settings: SearchSettings,
                deadline: float | None) -> StageOutcome:
        """Reorder the first `rerank_depth` candidates by reranker score (blended with their ranks); the rest
        keep their order.

        Cached scores are free; the misses are scored in first-stage order until `deadline`. Whatever
        got a score goes on top in (blended) score order, the rest follow in first-stage order.
        """
        reranker, depth = engine.reranker, settings.rerank_depth
        if reranker is None or depth == 0:
            reason = engine.rerank_unavailable if reranker is None else "rerank_depth is 0"
            return StageOutcome(candidates, None, RerankStatus(
                status="unavailable" if reranker is None else "skipped", reason=reason, model=None, depth=0,
                scored=0, cache_hits=0, degraded=False))
        started_ms = settings.budget_ms - (deadline - budget.now()) * 1000 if deadline is not None else 0.0
        head = candidates[:depth]
        passages = [engine.index.passages[int(i)] for i in head]
        cache = engine.cache
        keys = [cache_key(reranker.signature, query, p.digest) for p in passages] if cache is not None else []
        cached = cache.get_many(keys) if cache is not None else {}
        scores = np.full(len(head), np.nan, dtype=np.float32)
        for j, k in enumerate(keys):
            if k in cached:
                scores[j] = cached[k]
        misses = np.flatnonzero(np.isnan(scores))
        planned = len(head) - len(misses)
        if len(misses):
            texts = [passages[j].content for j in misses]
            stored = engine.index.passage_tokens(head[misses], reranker.tokenizer_fingerprint)
            if stored is not None:  # token ids from the index: no passage is tokenised at query time
                reranker.know_passages(texts, stored)
            encoded = reranker.encode([(query, t) for t in texts])
            fresh, planned_misses = score_within(reranker, encoded, settings.batch_size, deadline)
            planned += planned_misses
            scores[misses[: len(fresh)]] = fresh
            if cache is not None:
                cache.put_many({keys[j]: float(s) for j, s in zip(misses, fresh)})
        done = np.flatnonzero(~np.isnan(scores))
        final = blended_scores(scores[done], done + 1, settings.blend)
        best = np.argsort(-final, kind="stable")
        rest = np.flatnonzero(np.isnan(scores))
        order = np.concatenate([head[done[best]], head[rest], candidates[depth:]])
        degraded = len(done) < len(head)
        return StageOutcome(order, (head[done[best]], final[best]), raw=scores[done[best]], status=RerankStatus(
            status="degraded" if degraded else "ok", blend=settings.blend,
            reason=budget_reason(len(done), len(head), started_ms, settings.budget_ms) if degraded else "",
            model=reranker.model_id, depth=len(head), planned_depth=planned, scored=len(done),
            cache_hits=len(cached), degraded=degraded))


def budget_reason(scored: int, depth: int, started_ms: float, budget_ms: float | None) -> str:
    """Why reranking stopped short; says so when what ran before it (retrieval, late interaction) had used the budget up."""
    reason = f"latency budget: scored {scored} of {depth}"
    if budget_ms is not None and started_ms >= budget_ms:
        reason += f" (what ran before reranking took {started_ms:.0f} ms of the {budget_ms:g} ms budget)"
    return reason
