"""The reranker protocols: sentence-transformers' verbs (`predict`, `rank`) for every reranker, and the
pointwise one every model backend implements (encode pairs once, score them batch by batch)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
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


class Ranks(ABC):
    """`predict` (one score per pair) and `rank` (documents best first), as sentence-transformers' CrossEncoder
    has them: what every reranker offers, pointwise (`Reranker`) or listwise (`LLMReranker`)."""

    model_id: str

    @abstractmethod
    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, progress: bool = False, *,
                raw_scores: bool = False) -> np.ndarray:
        """One float32 score per pair, in input order; higher is more relevant."""

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None,
             return_documents: bool = False, batch_size: int = 32, raw_scores: bool = False) -> list[dict]:
        """Documents sorted by score: `[{"corpus_id", "score", "text"?}]`, best first (scores as `predict`'s)."""
        if not isinstance(query, str) or not query.strip():
            raise CascadeError("query is empty")
        if isinstance(documents, str):
            raise CascadeError("documents must be a list of strings, not one string")
        if top_k is not None and top_k < 1:
            raise CascadeError(f"top_k must be >= 1, got {top_k}")
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size, raw_scores=raw_scores)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"corpus_id": int(i), "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
                for i in order]


class Reranker(Ranks):
    """Scores (query, document) pairs jointly. Higher is more relevant; scales differ by model.

    Backends implement `encode` and `score`; `predict` and `rank` match sentence-transformers'
    CrossEncoder so moving to Cascade is a one-line change. Every scored batch is timed into `cost`,
    the running estimate that latency budgets plan with.
    """

    model_id: str
    cost: CostModel
    activation: Callable | None = None  # what `predict` applies to raw scores by default (None: none)
    tokenizer_fingerprint: str | None = None  # set where passages' stored token ids can stand in for tokenising

    def know_passages(self, texts: Sequence[str], tokens: Sequence[tuple[list[int], int]]) -> None:
        """Passages' (token ids, count) as an index stored them (`Index.passage_tokens`), for the next `encode`
        to assemble pairs from; a reranker that prepares pairs otherwise ignores them."""

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

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, progress: bool = False, *,
                raw_scores: bool = False, activation_fn: Callable | None = None, show_progress_bar: bool | None = None,
                convert_to_tensor: bool = False, convert_to_numpy: bool = True, apply_softmax: bool = False):
        """One float32 score per pair, in input order; batches are length-sorted so each pads little.

        Args:
            pairs: (query, document) texts.
            batch_size: pairs per model call.
            raw_scores: the model's raw scores (logits; what search ranks and caches) instead of activated ones.
            activation_fn: replaces the model's activation (a sigmoid for a one-logit cross-encoder).
            show_progress_bar, convert_to_tensor, convert_to_numpy, apply_softmax: sentence-transformers'
                keyword arguments; the last two change nothing for a one-score model.

        Returns:
            Scores in [0, 1] for a cross-encoder by default, so thresholds carry over from sentence-transformers
            and Cohere; a torch tensor with `convert_to_tensor`.

        Examples:
            >>> CrossEncoder("cascade-reranker").predict([("what raises tides?", "The Moon raises tides.")])
        """
        scores = np.zeros(len(pairs), dtype=np.float32)
        if len(pairs):
            encoded = self.encode(pairs)
            shown = progress if show_progress_bar is None else show_progress_bar
            with tqdm(total=len(pairs), desc="reranking", unit="pair", disable=not shown) as bar:
                for batch in length_sorted_batches(encoded.lengths, batch_size):
                    scores[batch] = self.timed_score(encoded, batch)
                    bar.update(len(batch))
        activation = None if raw_scores else activation_fn or self.activation
        if activation is not None:
            out = activation(torch.from_numpy(scores))
            scores = (out.detach().float().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)).astype(np.float32)
        return torch.from_numpy(scores) if convert_to_tensor else scores
