"""The reranker protocol every backend implements: score pairs, rank documents."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from cascade.errors import CascadeError


class Reranker(ABC):
    """Scores (query, document) pairs jointly. Higher is more relevant; scales differ by model.

    The verbs match sentence-transformers' CrossEncoder so moving to Cascade is a one-line change.
    """

    model_id: str

    @abstractmethod
    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """One float32 score per pair, in input order."""

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
