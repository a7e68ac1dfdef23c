"""Reranking under a latency budget: a running cost estimate, adaptive depth, and an early stop.

A cross-encoder's time is close to linear in padded tokens at the lengths rerankers run (<= 512), so
one number, milliseconds per padded token (a moving average over measured batches), predicts any
batch. Candidates are scored in first-stage order, batch by batch, so stopping early still leaves
the best-ranked ones reranked; a batch whose predicted time would overrun the deadline is not
started, which bounds any overrun by one batch's misprediction. A server whose client has gone stops the
work at the next batch too (`GONE`, `Abandoned`).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from cascade.models.runtime import length_sorted_batches

if TYPE_CHECKING:
    from cascade.rerank.base import Encoded, Reranker


def now() -> float:
    """The budget's clock in seconds (module-level so tests can swap in a fake one)."""
    return time.perf_counter()


class Abandoned(Exception):
    """Whoever asked for this reranking has gone (a server's client hung up): stop at the next batch."""


GONE: ContextVar[Callable[[], bool] | None] = ContextVar("cascade_gone", default=None)  # set by a server


def check_gone() -> None:
    """Raise Abandoned if the caller set a `GONE` check in this context and it says the requester left."""
    gone = GONE.get()
    if gone is not None and gone():
        raise Abandoned


@dataclass
class CostModel:
    """Milliseconds per padded token, smoothed; None until the first batch has been timed."""

    ms_per_token: float | None = None
    smoothing: float = 0.3

    def observe(self, tokens: int, ms: float) -> None:
        if tokens <= 0:
            return
        rate = ms / tokens
        old = self.ms_per_token
        self.ms_per_token = rate if old is None else (1 - self.smoothing) * old + self.smoothing * rate

    def predict(self, tokens: int) -> float:
        """Expected ms for a batch of `tokens` padded tokens (0 while nothing has been measured)."""
        return (self.ms_per_token or 0.0) * tokens


def padded_tokens(lengths: np.ndarray, batch: np.ndarray) -> int:
    """Tokens a batch costs once padded to its longest pair."""
    return int(len(batch) * lengths[batch].max()) if len(batch) else 0


def prefix_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Indices 0..n-1 in consecutive batches: first-stage order, so any prefix of batches is a top-k."""
    return [np.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def plan_depth(lengths: np.ndarray, batch_size: int, cost: CostModel, budget_ms: float) -> int:
    """The most candidates, taken in first-stage order, whose batches are predicted to fit in `budget_ms`."""
    spent, depth = 0.0, 0
    for batch in prefix_batches(len(lengths), batch_size):
        need = cost.predict(padded_tokens(lengths, batch))
        if spent + need <= budget_ms:
            spent, depth = spent + need, depth + len(batch)
            continue
        # the last batch only partly fits: take its longest prefix that does
        for k in range(len(batch) - 1, 0, -1):
            if spent + cost.predict(padded_tokens(lengths, batch[:k])) <= budget_ms:
                return depth + k
        return depth
    return depth


def score_within(reranker: "Reranker", encoded: "Encoded", batch_size: int,
                 deadline: float | None) -> tuple[np.ndarray, int]:
    """(scores of the first-stage-order prefix scored before `deadline` (a `now()` value),
    the depth planned up front). With no deadline every pair is scored, in length-sorted batches."""
    n = len(encoded.lengths)
    if deadline is None:
        scores = np.zeros(n, dtype=np.float32)
        for batch in length_sorted_batches(encoded.lengths, batch_size):
            check_gone()
            scores[batch] = reranker.timed_score(encoded, batch)
        return scores, n
    planned = plan_depth(encoded.lengths, batch_size, reranker.cost, (deadline - now()) * 1000)
    parts = []
    for batch in prefix_batches(planned, batch_size):
        need_s = reranker.cost.predict(padded_tokens(encoded.lengths, batch)) / 1000
        if now() + need_s > deadline:
            break
        check_gone()
        parts.append(reranker.timed_score(encoded, batch))
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)), planned
