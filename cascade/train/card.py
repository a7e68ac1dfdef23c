"""The model card a trained folder ships with: base, every data source, the recipe, the command, dev numbers."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import torch

from cascade.models.hub import DEFAULT_ENCODER, bundled_path
from cascade.train.config import TrainConfig, TrainData, TrainResult

CARDS = {
    "cross-encoder": ("text-ranking", "cross-encoder", "Cascade cross-encoder reranker",
                      "A one-logit sequence-classification model: score = relevance of (query, passage). Loads "
                      "unchanged in\n`transformers` (AutoModelForSequenceClassification) and sentence-transformers' "
                      "`CrossEncoder`.",
                      'from cascade.rerank import CrossEncoder\nmodel = CrossEncoder("path/to/this/folder")\n'
                      'model.rank("does vitamin D lower blood pressure?", ["passage one", "passage two"])'),
    "late-interaction": ("feature-extraction", "late-interaction", "Cascade late-interaction encoder",
                         "A token encoder for ColBERT-style MaxSim: `transformers` AutoModel weights plus a linear "
                         "projection\n(`late_interaction.json`, `late_projection.safetensors`). Use it with "
                         "`cascade index --late-interaction DIR`\nor `LateInteraction(DIR)`.",
                         "from cascade import Cascade\nengine = Cascade.build(docs, \"./idx\", "
                         "late_interaction=\"path/to/this/folder\")\nengine.search(\"query\", late_depth=60)"),
}


def base_license(base: str) -> str:
    """The base weights' license, which a fine-tuned model inherits (read from a local model card)."""
    if base == DEFAULT_ENCODER or Path(base) == bundled_path(DEFAULT_ENCODER):
        return "sentence-transformers/all-MiniLM-L6-v2, license Apache-2.0"
    card = Path(base) / "README.md"
    if card.is_file():
        found = re.search(r"^license:\s*(\S+)", card.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
        if found:
            return f"license {found.group(1)}, from its model card"
    return "see its own model card for its license, which this model inherits"


def distilled(config: TrainConfig) -> str:
    if not config.teachers:
        return ""
    first, *more = config.teachers
    scores = (f"the mean standardised scores of `{first}` and `{'`, `'.join(more)}`" if more else "the teacher's scores")
    return (f"Distilled from `{first}` into {config.layers or 'all'} of its layers: `{config.distill_loss}` on "
            f"{scores}, mixed with {config.label_weight:.0%} label loss.\n")


def pseudo(config: TrainConfig) -> str:
    if not config.pseudo_queries:
        return ""
    kinds = [*config.pseudo_kinds, *(["llm"] if config.llm_url and "llm" not in config.pseudo_kinds else [])]
    writer = f" (llm: questions written by `{config.llm_model}`)" if config.llm_url else ""
    return (f"\nPseudo-queries (no labels read): up to {config.pseudo_queries} per corpus, kinds "
            f"{', '.join(kinds)}{writer}, kept when the first stage ranks their source in its top "
            f"{config.pseudo_keep_top}; their hard negatives start below its top {config.pseudo_skip_top}, plus the "
            "source passage with its claim flipped where the query states a direction.\n")


def dev_table(result: TrainResult) -> str:
    rows = "\n".join(f"| {source} | {row['first_stage']:.4f} | {row['alone']:.4f} | {row['blended']:.4f} |"
                     for source, row in result.best_dev.items())
    return ("| dev source | first stage (hybrid RRF) | this reranker alone | blended (what search runs) |\n"
            f"|---|---:|---:|---:|\n{rows}\n")


def model_card(config: TrainConfig, data: TrainData, result: TrainResult, kind: str = "cross-encoder") -> str:
    pipeline, tag, title, what, usage = CARDS[kind]
    hardware = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    sources = "\n".join(f"- {s['dataset']}: {s['train_queries']} training queries, {s['dev_queries']} dev queries "
                        f"({s['dev']})" for s in data.sources)
    weights = ", ".join(f"{k} x{v:g}" for k, v in config.source_weights.items()) or "every example alike"
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: {pipeline}
tags: [{tag}, reranker, cascade]
base_model: {config.base}
---
# {title}

{what} Max length {config.max_length} tokens.

## Base model
`{config.base}` ({base_license(config.base)}).

## Training data
{sources}

Sampling weights: {weights}.

Hard negatives: the top {config.mine_depth} of Cascade's hybrid first stage minus judged positives
(skipping the top {config.skip_top}), plus {config.easy_negatives} random corpus passages per query.
{pseudo(config)}
## Training
{distilled(config)}Loss `{config.loss}` with 1 positive + {config.negatives} negatives per query,
{config.batch_queries} queries per step x {config.grad_accum} accumulation, lr {config.lr}, max length
{config.max_length}, seed {config.seed}; {result.steps} steps in {result.seconds / 60:.1f} min on
{platform.machine()} ({hardware}).
Checkpoint chosen at step {result.best_step} by the mean over dev sources of the blended cascade's nDCG@10
(reranking the first stage's top {config.mine_depth}).

Command: `{config.command}`

## Dev results (nDCG@10, reranking the top {config.mine_depth})
{dev_table(result)}
## Usage
```python
{usage}
```
"""
