"""One protocol for every stage after the first: reorder the head of the candidate list, say what happened.

A stage gets the engine (for the index, the models, the score cache), the query, the candidates in the
previous stage's order, the search settings and the latency deadline, and returns a `StageOutcome`: the new
full order, its own ranking of the head it reordered (for per-stage scores and eval runs), and a status.
Adding a stage is one file here, one entry in the registry (`stages/__init__.py`) and one depth setting
(`settings.py`); the engine, the eval chains and the outputs read the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypedDict

import numpy as np

from cascade.settings import SearchSettings

if TYPE_CHECKING:
    from cascade.pipeline import Cascade


class RerankStatus(TypedDict, total=False):
    """What the cross-encoder stage did: JSON as `search --json` and `/search` show it under "rerank"."""

    status: str  # ok, degraded (the budget cut it short), skipped (depth 0) or unavailable (no reranker)
    reason: str
    model: str | None
    depth: int
    planned_depth: int
    scored: int
    cache_hits: int
    degraded: bool
    blend: float


class LLMStatus(TypedDict):
    """What the LLM stage did: shown under "llm"."""

    model: str
    depth: int
    degraded: bool
    reason: str
    calls: int
    tokens: dict[str, int]


@dataclass
class StageOutcome:
    order: np.ndarray  # every candidate, best first: the reordered head, then the rest as they came
    head: tuple[np.ndarray, np.ndarray] | None  # this stage's own (ids, scores) for the head; None if it did nothing
    status: RerankStatus | LLMStatus | None = None
    raw: np.ndarray | None = None  # the model's own scores of `head`'s ids, before blending with ranks


class Stage(Protocol):
    name: str  # as in `--stages` and the per-stage scores: "late", "rerank", "llm"
    depth: str  # the SearchSettings field holding how many candidates it reorders
    always: bool  # runs (and reports a status) even at depth 0

    def check(self, engine: Cascade) -> None:
        """Raise a CascadeError, before any work, if this engine cannot run the stage."""

    def reorder(self, engine: Cascade, query: str, candidates: np.ndarray, settings: SearchSettings,
                deadline: float | None) -> StageOutcome:
        """The candidates with the head reordered by this stage."""
