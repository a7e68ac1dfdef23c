"""Batch search over a runner (cascade/runners.py): many queries, one task per batch, workers keep the engine.

Apart from the runners themselves because it needs the engine, and the index (which the engine loads)
needs the runners: one file for both made an import cycle.
"""

from __future__ import annotations

from typing import Any, Sequence

from cascade.pipeline import Cascade
from cascade.runners import LocalRunner, Runner
from cascade.settings import SearchSettings

_ENGINES: dict[tuple, Any] = {}


def search_batch(index: str, reranker: str | None, queries: Sequence[str], settings: dict) -> list[dict]:
    """One task of `search_many`: the worker opens the index once (memory-mapped) and keeps it."""
    key = (index, reranker)
    if key not in _ENGINES:
        _ENGINES[key] = Cascade.load(index, reranker=reranker, cache="none")
    return [_ENGINES[key].search(q, SearchSettings(**settings)).to_dict() for q in queries]


def search_many(index: str, queries: Sequence[str], runner: Runner | None = None, reranker: str | None = "auto",
                batch: int = 64, settings=None, **changes) -> list[dict]:
    """Search many queries, `batch` per task, through `runner` (a Ray cluster: one task per batch); each
    result is `SearchResult.to_dict()`, in query order. `settings` (a `SearchSettings`) and `changes` as in
    `Cascade.search`, checked here before any task starts."""
    checked = (settings or SearchSettings()).replace(**changes).to_dict()
    runner = runner or LocalRunner()
    chunks = [list(queries[i:i + batch]) for i in range(0, len(queries), batch)]
    return [r for part in runner.map(search_batch, [(str(index), reranker, c, checked) for c in chunks]) for r in part]
