"""Late interaction (ColBERT-style MaxSim over stored token vectors): cheap, reorders a deep head."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cascade.rerank.blend import blended_scores
from cascade.settings import SearchSettings
from cascade.stages.base import StageOutcome

if TYPE_CHECKING:
    from cascade.pipeline import Cascade


class LateStage:
    name, depth, always = "late", "late_depth", False

    def check(self, engine: Cascade) -> None:
        engine.late_encoder  # raises when the index has no token vectors

    def reorder(self, engine: Cascade, query: str, candidates: np.ndarray, settings: SearchSettings,
                deadline: float | None) -> StageOutcome:
        """The top `late_depth` reordered by MaxSim over the stored token vectors, blended with their ranks."""
        head = candidates[: settings.late_depth]
        raw = engine.index.late.score(engine.late_encoder.encode([query], query=True)[0], head)
        scores = blended_scores(raw, np.arange(1, len(head) + 1), settings.blend)
        best = np.argsort(-scores, kind="stable")
        return StageOutcome(np.concatenate([head[best], candidates[len(head):]]), (head[best], scores[best]),
                            raw=raw[best])
