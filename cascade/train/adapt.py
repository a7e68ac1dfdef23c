"""Label-free adaptation: a reranker tuned to one index's own passages, with no queries and no labels.

Pseudo-queries over the index's passages (pseudo.py) train a copy of the starting reranker (the bundled
one unless told), and a seeded share of them, never trained on, is the dev set: the checkpoint is chosen
there, and there the first stage, the starting model and the adapted one are compared as search runs
them (blended with the first stage). The index then records the verdict in `reranker.json`, which
`Cascade.load` follows: the adapted model when it beats both, the starting model when adapting did not
help, and no reranker when reranking does not pay on this corpus; it is said, not shipped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from cascade.fileio import atomic_write
from cascade.index import RERANKER_CHOICE
from cascade.models.hub import BUNDLED_RERANKER, resolve
from cascade.pipeline import Cascade, index_pair_tokens
from cascade.rerank.cross_encoder import CrossEncoder
from cascade.train.config import TrainConfig, TrainResult
from cascade.train.dev import dev_report, selection_score
from cascade.train.prepare import label_free
from cascade.train.trainer import Trainer


@dataclass
class AdaptReport:
    """nDCG@10 on the held-out pseudo-queries (blended as search runs; `*_alone`: the reranker alone)."""

    held_out: int
    first_stage: float
    base: float
    adapted: float
    base_alone: float
    adapted_alone: float
    choice: str | None  # what the index now uses: a model folder, or None for no reranking
    verdict: str
    training: TrainResult


def verdict(first: float, base: float, adapted: float, out: str, start: str) -> tuple[str | None, str]:
    if adapted > max(base, first):
        return out, f"adapted model wins ({adapted:.4f} vs starting model {base:.4f}, first stage {first:.4f})"
    if base > first:
        return start, f"adapting did not help ({adapted:.4f} vs {base:.4f}): the index keeps the starting model"
    return None, (f"reranking does not pay on this corpus (first stage {first:.4f}, starting model {base:.4f}, "
                  f"adapted {adapted:.4f}): the index searches without a reranker")


def adapt(index_dir: str | Path, config: TrainConfig, progress: bool = True) -> AdaptReport:
    """Adapt `config.base` to the index at `index_dir` and record the verdict in the index.

    Args:
        index_dir: an index written by `cascade index`.
        config: the training recipe; `labels` must be False and `pseudo_queries` > 0 (`adapt_config` sets them).
        progress: show progress bars (with an ETA) for filtering and training.

    Returns:
        An `AdaptReport` with the held-out numbers and the choice written to `index_dir/reranker.json`.

    Examples:
        >>> adapt("./idx", adapt_config("./my-reranker", pseudo_queries=2000, max_steps=300))
    """
    root = Path(index_dir)
    cascade = Cascade.load(root, reranker=None)
    if config.max_length is None:  # what this index's pairs need, the window search will read them in
        config = replace(config, max_length=index_pair_tokens(cascade.index.manifest) or 256)
    data = label_free(cascade, config, root.resolve().name, progress)
    start = CrossEncoder(config.base, device=config.device, max_length=config.max_length)
    before = dev_report(start, data.dev)
    result = Trainer(config, data).run(progress=progress)
    source = next(iter(before))
    first, base = before[source]["first_stage"], selection_score(before)
    adapted, adapted_alone = result.best_dev_ndcg, result.best_dev.get(source, {}).get("alone", 0.0)
    out = str(Path(config.out).resolve())
    choice, why = verdict(first, base, adapted, out, config.base)
    atomic_write(root / RERANKER_CHOICE, json.dumps({
        "reranker": choice, "verdict": why, "held_out_queries": len(data.dev), "first_stage": first,
        "starting_model": {"model": config.base, "blended": base, "alone": before[source]["alone"]},
        "adapted_model": {"model": out, "blended": adapted, "alone": adapted_alone},
        "command": config.command}, indent=2))
    return AdaptReport(len(data.dev), first, base, adapted, before[source]["alone"], adapted_alone, choice, why,
                       result)


def adapt_config(out: str | Path, **changes) -> TrainConfig:
    """The adaptation recipe: from the bundled reranker, pseudo-queries only, a gentle learning rate."""
    defaults = {"base": str(resolve(BUNDLED_RERANKER)), "labels": False, "pseudo_queries": 2000, "lr": 2e-5,
                "max_length": None,  # `adapt` fits it to the index's passages
                "max_steps": 300, "eval_every": 50, "max_dev_queries": 200, "dev_fraction": 0.1,
                "command": "Python API (cascade.train.adapt)"}
    return TrainConfig(out=str(out), **{**defaults, **changes})
