"""Micro-batching: concurrent requests' pairs share model calls, and no model work runs on the event loop.

One worker thread owns the reranker. Requests that arrive within `window_ms` of each other are coalesced
into one `predict` over all their pairs (up to `max_pairs`), which sorts them by length and pads per
batch, so many small requests cost about what one large one does. `model_lock` is held for every model
call, including the searches the service runs, so two model calls never fight over the same cores.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from cascade.rerank.base import Reranker


@dataclass
class Job:
    pairs: Sequence[tuple[str, str]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, reranker: Reranker, window_ms: float = 5.0, max_pairs: int = 256, enabled: bool = True,
                 batch_size: int = 8, on_batch: Callable[[int, int], None] | None = None):
        self.reranker = reranker
        self.window_s = window_ms / 1000 if enabled else 0.0
        self.max_pairs = max_pairs if enabled else 0
        self.batch_size = batch_size
        self.on_batch = on_batch  # (requests, pairs) per model call: for metrics
        self.model_lock = threading.Lock()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="cascade-model", daemon=True)
        self._thread.start()

    async def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Scores for `pairs`, computed on the model thread, possibly in one call with other requests'."""
        loop = asyncio.get_running_loop()
        job = Job(pairs, loop, loop.create_future())
        self._jobs.put(job)
        return await job.future

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """`first` plus whatever arrives within the window, up to max_pairs; True if told to stop."""
        jobs, pairs = [first], len(first.pairs)
        deadline = time.perf_counter() + self.window_s
        while pairs < self.max_pairs:
            try:
                job = self._jobs.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            pairs += len(job.pairs)
        return jobs, False

    def _work(self) -> None:
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            pairs = [p for job in jobs for p in job.pairs]
            results = self._score(pairs, [len(job.pairs) for job in jobs])
            if len(jobs) > 1 and isinstance(results[0], Exception):
                # one request's bad input must not fail the requests it was batched with: score each alone
                results = [self._score(job.pairs, [len(job.pairs)])[0] for job in jobs]
            if self.on_batch:
                self.on_batch(len(jobs), len(pairs))
            for job, result in zip(jobs, results):
                job.loop.call_soon_threadsafe(_resolve, job.future, result)

    def _score(self, pairs: Sequence[tuple[str, str]], sizes: list[int]) -> list:
        """Scores split into `sizes` parts, or the exception once per part (answered as a 500 with its message)."""
        try:
            with self.model_lock:
                scores = self.reranker.predict(pairs, batch_size=self.batch_size, raw_scores=True)
        except Exception as e:
            return [e] * len(sizes)
        bounds = np.cumsum([0] + sizes)
        return [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _resolve(future: asyncio.Future, result) -> None:
    if future.cancelled():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
