"""What a search returns: hits with their score and rank at every stage, and each stage's raw ranking.

Apart from the engine so front ends (text output, JSON, eval) can read results without importing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Hit:
    id: str
    doc_id: str
    title: str
    text: str
    score: float
    rank: int
    stage_scores: dict[str, float | None]
    stage_ranks: dict[str, int | None]
    metadata: dict = field(default_factory=dict)  # the document's, as indexed (JSONL fields besides id/title/text)
    model_scores: dict[str, float] = field(default_factory=dict)  # late/rerank: the model's own score, unblended


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    timings_ms: dict[str, float]
    rerank: dict = field(default_factory=dict)
    degraded: bool = False  # the budget cut reranking short (`rerank["scored"]`), or the LLM stage failed (`llm`)
    llm: dict | None = None  # the LLM stage's status, calls and tokens, when it ran
    degraded_reason: str = ""  # why, in words, when degraded: each cut-short stage's reason

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StageRuns:
    """One query's ranking at every stage, as (passage indices best first, scores)."""

    bm25: tuple[np.ndarray, np.ndarray]
    dense: tuple[np.ndarray, np.ndarray]
    fusion: tuple[np.ndarray, np.ndarray]
    order: np.ndarray  # final order: the last stage's head, then the rest of the list before it
    timings_ms: dict[str, float]
    # each later stage that ran, by its registry name ("late", "rerank", "llm"): its own ranking of the head
    # it reordered (None if it did nothing; the LLM's scored by rank), and its status where it reports one
    heads: dict[str, tuple[np.ndarray, np.ndarray] | None] = field(default_factory=dict)
    statuses: dict[str, dict] = field(default_factory=dict)
    raw: dict[str, np.ndarray] = field(default_factory=dict)  # a stage's own model scores of its head, unblended
    query_vector: np.ndarray | None = None  # the encoded query (eval reuses it to measure ANN recall)
