"""The stages after the first, in the order they run; each reorders the head of the list before it."""

from __future__ import annotations

from cascade.stages.base import LLMStatus, RerankStatus, Stage, StageOutcome
from cascade.stages.cross_encoder import CrossEncoderStage
from cascade.stages.late import LateStage
from cascade.stages.llm import LLMStage

STAGES: dict[str, Stage] = {stage.name: stage for stage in (LateStage(), CrossEncoderStage(), LLMStage())}

__all__ = ["STAGES", "LLMStatus", "RerankStatus", "Stage", "StageOutcome"]
