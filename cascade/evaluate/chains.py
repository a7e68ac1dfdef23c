"""The names eval and sweeps take: bm25, dense, and chains such as hybrid+late+rerank, with their settings.

Apart from the runner so the CLI's parser can name them without loading a model.
"""

from __future__ import annotations

from typing import Sequence

from cascade.errors import CascadeError
from cascade.settings import STAGE_ORDER, UNBUDGETED, SearchSettings

STAGES = ("bm25", "dense", "hybrid", "hybrid+rerank")  # the default; any hybrid+late/rerank/llm chain is allowed
CHAIN = STAGE_ORDER[1:]  # the stages after hybrid, in run order (a test holds it equal to cascade.stages.STAGES)
CHAIN_DEPTHS = {"late_depth": 60, "llm_depth": 10}  # what chains with a late or llm stage use unless told


def chain(stage: str) -> tuple[str, ...] | None:
    """("late", "rerank") for "hybrid+late+rerank"; () for "hybrid"; None for anything that is not a chain."""
    first, *rest = stage.split("+")
    ok = first == "hybrid" and len(set(rest)) == len(rest) and all(r in CHAIN for r in rest)
    return tuple(sorted(rest, key=CHAIN.index)) if ok and rest == sorted(rest, key=CHAIN.index) else None


def parse_stages(text: str) -> list[str]:
    """Stage names in a canonical order: bm25, dense, then hybrid chains shortest first."""
    names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in names if s not in ("bm25", "dense") and chain(s) is None]
    if unknown or not names:
        raise CascadeError(f"unknown stage(s) {', '.join(unknown) or '(none)'}; choose from bm25, dense, hybrid, "
                           "or hybrid followed by +late, +rerank, +llm in that order (e.g. hybrid+late+rerank)")
    return sorted(names, key=_stage_order)


def _stage_order(stage: str) -> tuple:
    links = chain(stage) or ()
    return stage != "bm25", stage != "dense", len(links), [CHAIN.index(link) for link in links]


def eval_settings(stages: Sequence[str], settings: SearchSettings | None = None, **changes) -> SearchSettings:
    """The settings chains run with: no budget (exact numbers); late and llm depths only where a chain has
    that stage (CHAIN_DEPTHS by default), so they constrain nothing else."""
    uses = {link for s in stages for link in chain(s) or ()}
    base = settings or UNBUDGETED.replace(**{k: v for k, v in CHAIN_DEPTHS.items() if k.split("_")[0] in uses})
    return base.replace(**changes)
