"""Which reranker runs: an explicit name (of any registered kind), else the bundled model, else the default id
if cached, else none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cascade.errors import CascadeError
from cascade.models.hub import BUNDLED_RERANKER, DEFAULT_RERANKER, bundled_path, cached_path, resolve
from cascade.models.token_encoder import CONFIG as LATE_CONFIG
from cascade.rerank.base import Reranker
from cascade.rerank.cross_encoder import CrossEncoder
from cascade.rerank.late_interaction import LateInteraction

# Rerankers a model folder can be, by name. (The LLM reranker is no folder: `LLMReranker(url, model)`.)
KINDS: dict[str, type[Reranker]] = {"cross-encoder": CrossEncoder, "late-interaction": LateInteraction}


def kind_of(name: str) -> str:
    """A folder `cascade train --kind late-interaction` wrote is a late-interaction model; anything else is
    taken for a cross-encoder (which checks its own config)."""
    path = Path(resolve(name))
    return "late-interaction" if (path / LATE_CONFIG).is_file() else "cross-encoder"


@dataclass
class RerankerChoice:
    """The reranker to use, or None with the reason reranking is unavailable."""

    reranker: Reranker | None
    reason: str = ""


def load_reranker(name: str | None = None, device: str | None = None, precision: str = "auto",
                  fit: int | None = None) -> RerankerChoice:
    """Resolve the reranker: explicit name -> bundled model -> default id if cached -> unavailable.

    An explicit name that fails to load is an error; the implicit default never downloads and,
    when nothing is available, the search still runs on first-stage order. `fit`: the tokens an index's
    pairs need (`IndexSettings.pair_tokens`); a cross-encoder's window shrinks to it, never grows.
    """
    if name:
        kind = kind_of(name)
        extra = {"fit": fit} if kind == "cross-encoder" else {}
        return RerankerChoice(KINDS[kind](name, device=device, precision=precision, **extra))
    if bundled_path(BUNDLED_RERANKER):
        return RerankerChoice(CrossEncoder(BUNDLED_RERANKER, device=device, precision=precision, fit=fit))
    cached = cached_path(DEFAULT_RERANKER)
    if cached:
        try:
            return RerankerChoice(CrossEncoder(DEFAULT_RERANKER, device=device, precision=precision, fit=fit))
        except CascadeError as e:
            return RerankerChoice(None, f"cached {DEFAULT_RERANKER} failed to load: {e}")
    return RerankerChoice(
        None,
        f"no bundled reranker and {DEFAULT_RERANKER} is not in the local Hugging Face cache; "
        "pass --reranker with a local cross-encoder directory (or that hub id, when online)",
    )
