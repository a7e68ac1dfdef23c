"""The LLM judge (RankGPT over an OpenAI-compatible endpoint): the last, slowest, optional stage.

Outside `budget_ms`, which bounds retrieval and reranking: the LLM has its own timeout per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cascade.errors import CascadeError
from cascade.settings import SearchSettings
from cascade.stages.base import LLMStatus, StageOutcome

if TYPE_CHECKING:
    from cascade.pipeline import Cascade


class LLMStage:
    name, depth, always = "llm", "llm_depth", False

    def check(self, engine: Cascade) -> None:
        if engine.llm is None:
            raise CascadeError("llm_depth > 0 needs an LLM reranker: pass --llm-url and --llm-model "
                               "(Cascade(..., llm=LLMReranker(url, model)))")

    def reorder(self, engine: Cascade, query: str, candidates: np.ndarray, settings: SearchSettings,
                deadline: float | None) -> StageOutcome:
        """The LLM's listwise order of the top `llm_depth` (the previous order on any failure, marked degraded)."""
        head = candidates[: settings.llm_depth]
        ranking = engine.llm.rerank(query, [engine.index.passages[int(i)].content for i in head])
        new_head = head[ranking.order]
        status = LLMStatus(model=engine.llm.model_id, depth=len(head), degraded=ranking.degraded,
                           reason=ranking.reason, calls=ranking.calls, tokens=ranking.tokens)
        scores = (len(head) - np.arange(len(head))).astype(np.float32)  # the LLM ranks; it does not score
        return StageOutcome(np.concatenate([new_head, candidates[len(head):]]), (new_head, scores), status)
