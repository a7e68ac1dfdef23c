"""Every search and index setting in one place: its default, its bounds, its help text and its checks.

The engine takes a `SearchSettings`; the CLI generates its flags from these fields, the HTTP service its
request fields (and answers 422 naming the field), and evaluation, sweeps and batch search pass one on. No
front end restates a default or a check, so they cannot drift: before this room existed the default 150 was
written in 8 places and `/search` answered 422 for one bad depth and 400 for another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import numpy as np

from cascade.errors import CascadeError
from cascade.retrieve.dense import ANN_KINDS
from cascade.retrieve.hybrid import FUSIONS

DEFAULT_BLEND = 1.0  # chosen on dev; cascade/rerank/blend.py says how
CONTEXT_TOP = 20  # hits `context` packs from by default: more than a search shows, the token budget cuts
STAGE_ORDER = ("hybrid", "late", "rerank", "llm")  # stages run in this order, each reordering the head of the last
STAGE_DEPTHS = {"hybrid": "retrieve", "late": "late_depth", "rerank": "rerank_depth", "llm": "llm_depth"}

Namer = Callable[[str], str]  # a setting's name as the user wrote it: `rerank_depth`, `--rerank-depth`, ...


def _as_is(name: str) -> str:
    return name


class SettingError(CascadeError):
    """A bad setting, naming the field. `render` words it for a front end (the CLI names flags)."""

    def __init__(self, field_name: str, describe: Callable[[Namer], str]):
        self.field, self._describe = field_name, describe
        super().__init__(describe(_as_is))

    def render(self, name: Namer) -> str:
        return self._describe(name)


def _setting(default: Any, help: str, metavar: str | None = None, minimum: float | None = None,
             maximum: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "metavar": metavar, "min": minimum, "max": maximum,
                                            "choices": choices})


@dataclass(frozen=True)
class SearchSettings:
    """How one search runs. Immutable: `replace(**changes)` makes a checked copy.

    Examples:
        >>> SearchSettings(rerank_depth=50).retrieve
        150
        >>> SearchSettings.from_stages("hybrid:100,rerank:20").rerank_depth
        20
    """

    retrieve: int = _setting(150, "first-stage candidates: BM25 and dense each fetch K, fused into K", "K", 1, 10_000)
    late_depth: int = _setting(0, "late interaction (MaxSim over stored token vectors) reorders the top L fused "
                                  "candidates before the cross-encoder takes its top D; needs an index built with "
                                  "--late-interaction; 0 = off", "L", 0, 1000)
    rerank_depth: int = _setting(30, "candidates the cross-encoder rescores; 0 = first stage only", "D", 0, 1000)
    llm_depth: int = _setting(0, "an LLM reorders the final top M, listwise (RankGPT); needs an LLM endpoint; "
                                 "0 = off", "M", 0, 1000)
    top: int = _setting(8, "hits to return", "N", 1, 1000)
    fusion: str = _setting("rrf", "rrf: reciprocal rank fusion; weighted: min-max normalised score sum",
                           choices=FUSIONS)
    alpha: float = _setting(0.5, "dense weight of --fusion weighted, 0..1", "A", 0.0, 1.0)
    blend: float = _setting(DEFAULT_BLEND, "order the reranked head by 1/(60 + reranker rank) + B/(60 + "
                                           "first-stage rank) (chosen on dev: it keeps an out-of-domain reranker "
                                           "from undoing recall); 0 = the reranker's raw order and scores", "B", 0.0)
    budget_ms: float | None = _setting(200.0, "latency budget from the start of the search: retrieval always runs, "
                                              "then reranking takes the largest depth its running cost estimate "
                                              "says fits in what is left, stops before a batch that would overrun, "
                                              "and marks the result degraded, saying why; none = no limit",
                                       "MS", 0.0)
    batch_size: int = _setting(32, "pairs per cross-encoder call (32: the default 30 candidates in one call; "
                                   "on dev 98 ms total p50 against 112 for batches of 8, all 30 scored)", "P", 1, 1024)

    def __post_init__(self) -> None:
        for f in fields(self):  # checked, and stored as plain int/float (numpy numbers and 1 vs 1.0 alike)
            object.__setattr__(self, f.name, _check_field(f, getattr(self, f.name)))
        for depth in ("late_depth", "rerank_depth", "llm_depth"):
            value = getattr(self, depth)
            if self.retrieve < value:
                raise SettingError("retrieve", lambda n, d=depth, v=value: (
                    f"{n('retrieve')} ({self.retrieve}) must be >= {n(d)} ({v}): a later stage can only reorder "
                    "candidates the first stage found"))
        if self.late_depth and self.rerank_depth > self.late_depth:
            raise SettingError("rerank_depth", lambda n: (
                f"{n('rerank_depth')} ({self.rerank_depth}) must be <= {n('late_depth')} ({self.late_depth}): the "
                "cross-encoder reranks the head of the late-interaction order"))

    def replace(self, **changes: Any) -> "SearchSettings":
        """A checked copy with `changes`; an unknown name is refused, naming the settings there are."""
        if not changes:  # frozen and already checked: search and run_stages pass settings on unchanged
            return self
        unknown = sorted(set(changes) - set(NAMES))
        if unknown:
            raise SettingError(unknown[0], lambda n: f"unknown search setting {n(unknown[0])!r} (choose from "
                                                     f"{', '.join(n(x) for x in NAMES)})")
        return replace(self, **changes)

    @classmethod
    def from_stages(cls, spec: str, **others: Any) -> "SearchSettings":
        """`hybrid:150,late:60,rerank:20,llm:10` -> every stage depth at once; a stage left out does not run."""
        depths = {"late_depth": 0, "rerank_depth": 0, "llm_depth": 0}
        names = []
        for part in [p.strip() for p in spec.split(",") if p.strip()]:
            name, _, value = part.partition(":")
            if name not in STAGE_DEPTHS:
                raise CascadeError(f"unknown stage {name!r} in {spec!r} (choose from {', '.join(STAGE_ORDER)})")
            try:
                depth = int(value)
            except ValueError:
                raise CascadeError(f"stage {name!r} needs a depth, e.g. {name}:30 (got {part!r})") from None
            if depth < 1:
                raise CascadeError(f"stage {name!r} depth must be >= 1, got {depth}")
            names.append(name)
            depths[STAGE_DEPTHS[name]] = depth
        if not names or names[0] != "hybrid" or names != sorted(set(names), key=STAGE_ORDER.index):
            raise CascadeError(f"stages must start with hybrid and follow the order {' -> '.join(STAGE_ORDER)} "
                               f"without repeats, got {spec!r}")
        return cls().replace(**{**others, **depths})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in NAMES}


NAMES = tuple(f.name for f in fields(SearchSettings))


def _check_field(f, value: Any) -> Any:
    """`value` checked against one field's type, bounds and choices (from its metadata), as a plain value."""
    meta, name = f.metadata, f.name
    low, high, choices = meta["min"], meta["max"], meta["choices"]
    if choices is not None:
        if value not in choices:
            raise SettingError(name, lambda n: f"unknown {n(name)} {value!r} (choose from {', '.join(choices)})")
        return value
    if value is None and name == "budget_ms":
        return None
    integer = isinstance(f.default, int)
    kinds = (int,) if integer else (int, float)
    numpy_kinds = np.integer if integer else (np.integer, np.floating)
    numeric = isinstance(value, kinds) and not isinstance(value, bool) or isinstance(value, numpy_kinds)
    inside = numeric and math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)
    if not inside:
        kind = "an integer" if integer else "a finite number"
        bounds = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
        extra = " or none (no limit)" if name == "budget_ms" else ""
        raise SettingError(name, lambda n: f"{n(name)} must be {kind} {bounds}{extra}, got {value!r}")
    return int(value) if integer else float(value)


UNBUDGETED = SearchSettings(budget_ms=None)  # evaluation's exact numbers: every planned candidate is scored


@dataclass(frozen=True)
class IndexSettings:
    """How an index is built: chunking, BM25, shards and dense search. `Index.build` stores them in the manifest;
    an update takes the existing index's value for every setting it is not given (`merged`).

    Examples:
        >>> IndexSettings.merged({"overlap": 20}, {"passage_words": 120}).passage_words
        120
    """

    # 80/16, not 200/40: chosen with the reranker's window on dev (benchmarks/passage_window_dev.py): same mean
    # dev nDCG@10, a better first stage, and 128-token pairs the cross-encoder scores 2.5x faster than 256.
    passage_words: int = _setting(80, "passage length in words; 0 keeps documents whole", "W", 0, 100_000)
    overlap: int = _setting(16, "words shared by consecutive passages", "W", 0, 100_000)
    k1: float = _setting(1.2, "BM25 term-frequency saturation", "K1", 0.0, 100.0)
    b: float = _setting(0.75, "BM25 document-length normalisation", "B", 0.0, 1.0)
    shards: int = _setting(1, "split the corpus into S shards of whole documents; searches fan out and merge, BM25 "
                              "uses global statistics so results equal an unsharded index's", "S", 1, 4096)
    ann: str = _setting("auto", "dense search per shard: flat (exact scan), hnsw (graph), ivfpq (compressed, "
                                "re-scored exactly); auto: flat below 100k passages per shard, else hnsw",
                        choices=("auto", *ANN_KINDS))
    ann_params: dict = field(default_factory=dict, metadata={"help": "ANN parameters by name (their own checks)"})

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "ann_params":
                object.__setattr__(self, f.name, _check_field(f, getattr(self, f.name)))
        if not isinstance(self.ann_params, dict):
            raise SettingError("ann_params", lambda n: f"{n('ann_params')} must be a mapping of name to integer")
        if self.passage_words and self.overlap >= self.passage_words:
            raise SettingError("overlap", lambda n: f"{n('overlap')} ({self.overlap}) must be smaller than "
                                                    f"{n('passage_words')} ({self.passage_words})")

    @classmethod
    def merged(cls, given: dict[str, Any], previous: dict[str, Any] | None = None) -> "IndexSettings":
        """Each setting: `given`'s unless None, else the previous index's (its manifest's), else the default."""
        unknown = sorted(set(given) - set(INDEX_NAMES))
        if unknown:
            raise SettingError(unknown[0], lambda n: f"unknown index setting {n(unknown[0])!r}")
        previous = previous or {}
        return cls(**{name: given[name] if given.get(name) is not None else previous[name]
                      for name in INDEX_NAMES if given.get(name) is not None or name in previous})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in INDEX_NAMES}

    @property
    def pair_tokens(self) -> int | None:
        """Tokens a (query, passage) pair of this index needs: 1.6 per passage word, rounded up to 32 (80 words:
        128, 120: 192; the windows that scored best at those lengths on dev, benchmarks/passage_window_dev.py).
        A reranker reads no further than this or its own window; None (whole documents): its own window."""
        return -(-self.passage_words * 8 // 5 // 32) * 32 if self.passage_words else None


INDEX_NAMES = tuple(f.name for f in fields(IndexSettings))
