"""The reranker protocol every backend implements: encode pairs once, score them batch by batch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from cascade.errors import CascadeError
from cascade.models.runtime import length_sorted_batches
from cascade.rerank import budget
from cascade.rerank.budget import CostModel, padded_tokens


@dataclass
class Encoded:
    """Pairs prepared for scoring. `lengths` (tokens per pair) is what batching and budgets reason about."""

    lengths: np.ndarray
    features: Any  # backend-specific, e.g. token ids


class Reranker(ABC):
    """Scores (query, document) pairs jointly. Higher is more relevant; scales differ by model.

    Backends implement `encode` and `score`; `predict` and `rank` match sentence-transformers'
    CrossEncoder so moving to Cascade is a one-line change. Every scored batch is timed into `cost`,
    the running estimate that latency budgets plan with.
    """

    model_id: str
    cost: CostModel

    @abstractmethod
    def encode(self, pairs: Sequence[tuple[str, str]]) -> Encoded:
        """Tokenise (or otherwise prepare) all pairs once."""

    @abstractmethod
    def score(self, encoded: Encoded, batch: np.ndarray) -> np.ndarray:
        """float32 scores of the pairs at indices `batch`, in that order (one model call)."""

    @property
    def signature(self) -> str:
        """What determines a score besides the pair (model and truncation): part of every cache key."""
        return self.model_id

    def timed_score(self, encoded: Encoded, batch: np.ndarray) -> np.ndarray:
        """`score`, feeding the measured time per padded token into `cost`."""
        start = budget.now()
        scores = self.score(encoded, batch)
        self.cost.observe(padded_tokens(encoded.lengths, batch), (budget.now() - start) * 1000)
        return scores

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """One float32 score per pair, in input order; batches are length-sorted so each pads little."""
        scores = np.zeros(len(pairs), dtype=np.float32)
        if len(pairs) == 0:
            return scores
        encoded = self.encode(pairs)
        with tqdm(total=len(pairs), desc="reranking", unit="pair", disable=not progress) as bar:
            for batch in length_sorted_batches(encoded.lengths, batch_size):
                scores[batch] = self.timed_score(encoded, batch)
                bar.update(len(batch))
        return scores

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None,
             return_documents: bool = False, batch_size: int = 32) -> list[dict]:
        """Documents sorted by score: `[{"corpus_id", "score", "text"?}]`, best first."""
        if not isinstance(query, str) or not query.strip():
            raise CascadeError("query is empty")
        if isinstance(documents, str):
            raise CascadeError("documents must be a list of strings, not one string")
        if top_k is not None and top_k < 1:
            raise CascadeError(f"top_k must be >= 1, got {top_k}")
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"corpus_id": int(i), "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
                for i in order]

