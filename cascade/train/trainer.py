"""Fine-tune a cross-encoder on relevance labels with hard negatives; keep the checkpoint best on dev.

Seeded and resumable: every evaluation writes `checkpoint.pt` (model, optimizer, schedule, RNG, best
weights) atomically, and `resume=True` continues from it. bf16 autocast on AMX CPUs and CUDA.
"""

from __future__ import annotations

import io
import json
import math
import platform
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cascade.errors import CascadeError
from cascade.evaluate.beir import load_split
from cascade.evaluate.metrics import ndcg_at, ranked
from cascade.evaluate.runner import open_cascade
from cascade.fileio import atomic_write
from cascade.inference import autocast, autocast_dtype, pick_device, quiet_transformers
from cascade.models import DEFAULT_ENCODER, bundled_path, resolve
from cascade.rerank.cross_encoder import CrossEncoder
from cascade.train.data import DevQuery, Example, dev_queries, hold_out, mine
from cascade.train.losses import DISTILL_LOSSES, get_loss

CHECKPOINT = "checkpoint.pt"
FRESH_HEAD_LR = 1e-3


@dataclass
class TrainConfig:
    out: str
    base: str = DEFAULT_ENCODER
    loss: str = "listwise"
    negatives: int = 7
    batch_queries: int = 8
    grad_accum: int = 1
    lr: float = 3e-5
    head_lr: float | None = None  # pooler + classifier; None: 1e-3 when the head is freshly initialised, else lr
    epochs: float = 1.0
    max_steps: int | None = None
    warmup: float = 0.1
    max_length: int = 256
    eval_every: int = 50
    patience: int = 4
    mine_depth: int = 30
    skip_top: int = 0
    max_negatives: int | None = None  # hardest negatives kept per query (bounds teacher scoring)
    easy_negatives: int = 0  # random corpus passages added to each query's negative pool
    max_positives: int | None = None  # judged positives kept per query (bounds teacher scoring on dense qrels)
    dev_fraction: float = 0.1
    max_dev_queries: int | None = None  # per dataset: bounds the cost of each dev evaluation
    seed: int = 13
    device: str | None = None
    precision: str = "auto"
    resume: bool = False
    teacher: str | None = None  # distillation: the model whose scores the student learns
    distill_loss: str = "margin-mse"
    label_weight: float = 0.0  # distillation: share of the label loss mixed into the teacher loss
    layers: int | None = None  # keep this many of the base model's layers (a student)
    save_dtype: str = "fp32"  # bf16 halves the folder (what the bundled model ships as)
    late_dim: int | None = None  # late interaction: projection size for a base without one (default 128)
    command: str = "Python API (cascade.train.trainer)"


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_dev_ndcg: float
    first_stage_dev_ndcg: float
    seconds: float
    history: list[dict] = field(default_factory=list)


@dataclass
class TrainData:
    examples: list[Example]
    dev: list[DevQuery]
    sources: list[dict]


def prepare(datasets: Sequence[str | Path], config: TrainConfig, progress: bool = True,
            mine_train: bool = True) -> TrainData:
    """Mine examples from each dataset's train split (unless `mine_train` is False: dev studies need only dev);
    dev from its dev split or a seeded 10% hold-out."""
    examples, dev, sources = [], [], []
    for path in map(Path, datasets):
        train = load_split(path, "train")
        if (path / "qrels" / "dev.tsv").is_file():
            dev_split = load_split(path, "dev")
            train_ids, dev_ids, dev_source = list(train.queries), list(dev_split.queries), "dev split"
            dev_texts, dev_qrels = dev_split.queries, dev_split.qrels
        else:
            train_ids, dev_ids = hold_out(list(train.queries), config.dev_fraction, config.seed)
            dev_texts, dev_qrels, dev_source = train.queries, train.qrels, f"seeded {config.dev_fraction:.0%} of train"
        if config.max_dev_queries and len(dev_ids) > config.max_dev_queries:
            dev_ids = sorted(random.Random(config.seed).sample(sorted(dev_ids), config.max_dev_queries))
            dev_source += f", seeded sample of {config.max_dev_queries}"
        cascade = open_cascade(path, None, reranker=None, progress=progress)
        mined = mine(cascade, {q: train.queries[q] for q in train_ids}, train.qrels, config.mine_depth,
                     config.skip_top, config.max_negatives, config.easy_negatives, config.seed,
                     config.max_positives, progress) if mine_train else []
        held = dev_queries(cascade, {q: dev_texts[q] for q in dev_ids}, dev_qrels, config.mine_depth, progress)
        examples += mined
        dev += held
        sources.append({"dataset": path.name, "train_queries": len(mined), "dev_queries": len(held),
                        "dev": dev_source})
    return TrainData(examples, dev, sources)


def query_ndcg(q: DevQuery, scores: np.ndarray) -> float:
    """nDCG@10 of a dev query's candidates ordered by `scores`; a document scores its best passage (MaxP)."""
    run: dict[str, float] = {}
    for (doc, _), s in sorted(zip(q.candidates, scores.tolist()), key=lambda x: -x[1]):
        run.setdefault(doc, s)
    return ndcg_at(ranked(run), q.rels, 10)


def dev_ndcg(scorer: CrossEncoder | None, dev: Sequence[DevQuery], batch_size: int = 16) -> float:
    """Mean nDCG@10 after reranking each dev query's candidates (None: first-stage order)."""
    total = 0.0
    for q in dev:
        if scorer is None:
            scores = -np.arange(len(q.candidates), dtype=float)
        else:
            scores = scorer.predict([(q.query, text) for _, text in q.candidates], batch_size=batch_size)
        total += query_ndcg(q, scores)
    return total / max(len(dev), 1)


class Trainer:
    """Cross-encoder training; `LateTrainer` (cascade/train/late.py) swaps in the late-interaction model."""

    kind = "cross-encoder"

    def __init__(self, config: TrainConfig, data: TrainData):
        quiet_transformers()
        self.config, self.data = config, data
        self.loss_fn = get_loss(config.loss)
        self.distill_fn = get_loss(config.distill_loss, DISTILL_LOSSES) if config.teacher else None
        if not 0.0 <= config.label_weight <= 1.0:
            raise CascadeError(f"label_weight must be in [0, 1], got {config.label_weight}")
        if config.save_dtype not in ("fp32", "bf16"):
            raise CascadeError(f"save_dtype must be fp32 or bf16, got {config.save_dtype!r}")
        for name in ("negatives", "batch_queries", "grad_accum", "max_length", "eval_every"):
            if getattr(config, name) < 1:
                raise CascadeError(f"{name} must be >= 1, got {getattr(config, name)}")
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.rng = random.Random(config.seed)
        self.device = pick_device(config.device)
        self.dtype = autocast_dtype(self.device, config.precision)
        try:
            fresh_head = self.build_model(resolve(config.base))
        except (OSError, ValueError) as e:
            raise CascadeError(f"could not load base model {config.base!r}: {str(e).splitlines()[0]}") from None
        if config.layers:
            keep_layers(self.model, config.layers)
        per_step = config.batch_queries * config.grad_accum
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * len(data.examples) / per_step))
        head_lr = config.head_lr or (FRESH_HEAD_LR if fresh_head else config.lr)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, config.lr, head_lr), weight_decay=0.01)
        warm = max(1, int(config.warmup * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: min((s + 1) / warm, max(0.0, (self.total_steps - s) / max(1, self.total_steps - warm))))
        self.step, self.best, self.best_step, self.bad_evals = 0, -1.0, 0, 0
        self.best_state: dict | None = None
        self.history: list[dict] = []
        self.order: list[int] = []  # example indices still to visit this epoch (checkpointed: resume is exact)
        self.out = Path(config.out)

    def build_model(self, path: str) -> bool:
        """Set `self.tokenizer` and `self.model` from `path`; True when the scoring head is freshly initialised."""
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # a bi-encoder base gets a fresh one-logit head: that is what training is for
        model_config = AutoConfig.from_pretrained(path, num_labels=1)
        no_attention_dropout(model_config)
        model, info = AutoModelForSequenceClassification.from_pretrained(path, config=model_config,
                                                                         output_loading_info=True)
        self.model = model.float().to(self.device)
        return any(k.startswith("classifier") for k in info["missing_keys"])

    def scorer(self) -> CrossEncoder:
        return CrossEncoder.wrap(self.model, self.tokenizer, "training", self.config.precision, self.config.max_length)

    def sample(self, batch: Sequence[Example]) -> list[tuple[Example, str]]:
        """Per query: one positive, then `negatives` hard negatives (with replacement if too few)."""
        pairs = []
        for ex in batch:
            negs = (self.rng.sample(ex.negatives, self.config.negatives) if len(ex.negatives) >= self.config.negatives
                    else self.rng.choices(ex.negatives, k=self.config.negatives))
            pairs += [(ex, self.rng.choice(ex.positives))] + [(ex, n) for n in negs]
        return pairs

    def pair_scores(self, pairs: Sequence[tuple[Example, str]]) -> torch.Tensor:
        """Differentiable float32 scores of (example's query, passage) pairs."""
        features = self.tokenizer([ex.query for ex, _ in pairs], [d for _, d in pairs], truncation="longest_first",
                                  max_length=self.config.max_length, padding=True, return_tensors="pt").to(self.device)
        with autocast(self.device, self.dtype, features["input_ids"].numel()):
            return self.model(**features).logits.float().view(-1)

    def batch_loss(self, batch: Sequence[Example]) -> torch.Tensor:
        pairs = self.sample(batch)
        scores = self.pair_scores(pairs).view(len(batch), 1 + self.config.negatives)
        if self.distill_fn is None:
            return self.loss_fn(scores)
        teacher = torch.tensor([ex.teacher[d] for ex, d in pairs], device=self.device).view_as(scores)
        w = self.config.label_weight
        return (1 - w) * self.distill_fn(scores, teacher) + (w * self.loss_fn(scores) if w else 0.0)

    def evaluate(self) -> float:
        self.model.eval()
        value = dev_ndcg(self.scorer(), self.data.dev)
        self.model.train()
        return value

    def run(self, progress: bool = True) -> TrainResult:
        start = time.perf_counter()
        if self.config.resume:
            self.load_checkpoint()
        first_stage = dev_ndcg(None, self.data.dev)
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="training", unit="step", disable=not progress)
        while self.step < self.total_steps and self.bad_evals < self.config.patience:
            losses = []
            for _ in range(self.config.grad_accum):
                if len(self.order) < self.config.batch_queries:
                    self.order += self.rng.sample(range(len(self.data.examples)), len(self.data.examples))
                batch = [self.data.examples[i] for i in self.order[: self.config.batch_queries]]
                del self.order[: self.config.batch_queries]
                loss = self.batch_loss(batch) / self.config.grad_accum
                loss.backward()
                losses.append(loss.item())
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            entry = {"step": self.step, "loss": sum(losses)}
            self.history.append(entry)  # before any checkpoint, so a resumed run keeps every step
            if self.step % self.config.eval_every == 0 or self.step == self.total_steps:
                entry["dev_ndcg@10"] = ndcg = self.evaluate()
                if ndcg > self.best:
                    self.best, self.best_step, self.bad_evals = ndcg, self.step, 0
                    self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                else:
                    self.bad_evals += 1
                self.save_checkpoint()
            bar.set_postfix(loss=f"{entry['loss']:.3f}", dev=f"{self.best:.4f}")
            bar.update(1)
        bar.close()
        result = TrainResult(steps=self.step, best_step=self.best_step, best_dev_ndcg=self.best,
                             first_stage_dev_ndcg=first_stage, seconds=time.perf_counter() - start,
                             history=self.history)
        self.save_model(result)
        return result

    def save_checkpoint(self) -> None:
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "step": self.step, "best": self.best,
                    "best_step": self.best_step, "bad_evals": self.bad_evals, "best_state": self.best_state,
                    "history": self.history, "order": self.order, "rng": self.rng.getstate(),
                    "torch_rng": torch.get_rng_state(),
                    "config": asdict(self.config)}, buf)
        atomic_write(self.out / CHECKPOINT, buf.getvalue())

    def load_checkpoint(self) -> None:
        path = self.out / CHECKPOINT
        if not path.is_file():
            raise CascadeError(f"nothing to resume: {path} does not exist")
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best, self.best_step = state["step"], state["best"], state["best_step"]
        self.bad_evals, self.best_state, self.history = state["bad_evals"], state["best_state"], state["history"]
        self.order = state["order"]
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])

    def save_model(self, result: TrainResult) -> None:
        """The best-on-dev weights as a plain Hugging Face folder, with a model card."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.save_weights({"fp32": torch.float32, "bf16": torch.bfloat16}[self.config.save_dtype])
        self.tokenizer.model_max_length = self.config.max_length  # what inference uses by default
        self.tokenizer.save_pretrained(self.out)
        atomic_write(self.out / "training_args.json", json.dumps(asdict(self.config), indent=2))
        atomic_write(self.out / "README.md", model_card(self.config, self.data, result, self.kind))

    def save_weights(self, dtype: torch.dtype) -> None:
        self.model.config.architectures = [type(self.model).__name__]
        self.model.to(dtype).save_pretrained(self.out)


def no_attention_dropout(model_config) -> None:
    """Dropout on attention probabilities forces SDPA off its fused kernel: 3.5x slower steps on the AMX CPU
    (measured), for a regulariser fine-tuning does not need; hidden dropout stays."""
    if hasattr(model_config, "attention_probs_dropout_prob"):
        model_config.attention_probs_dropout_prob = 0.0


def param_groups(model: torch.nn.Module, lr: float, head_lr: float) -> list[dict]:
    """The encoder at `lr`; the pooler and classifier at `head_lr`.

    Adam moves each weight by about lr per step, so a freshly initialised head (weights ~0.02) at an
    encoder's 3e-5 needs hundreds of steps before scores differ at all: the loss sits at log(N).
    """
    head, body = [], []
    for name, p in model.named_parameters():
        (head if name.startswith("classifier") or ".pooler." in name else body).append(p)
    return [{"params": body, "lr": lr}, {"params": head, "lr": head_lr}]


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
    if not config.teacher:
        return ""
    return (f"Distilled from `{config.teacher}` into {config.layers or 'all'} of its layers: `{config.distill_loss}` on "
            f"the teacher's scores, mixed with {config.label_weight:.0%} label loss.\n")


def keep_layers(model: torch.nn.Module, n: int) -> list[int]:
    """Cut a BERT-like encoder to `n` of its layers, evenly spaced and keeping the first and last.

    The student starts from the teacher's own weights, so distillation refines rather than relearns.
    """
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise CascadeError(f"cannot pick layers of a {type(model).__name__}: expected a BERT-like encoder.layer list")
    if not 1 <= n <= len(layers):
        raise CascadeError(f"layers must be between 1 and {len(layers)} (the base model's depth), got {n}")
    keep = sorted({round(i * (len(layers) - 1) / max(n - 1, 1)) for i in range(n)})
    encoder.layer = torch.nn.ModuleList(layers[i] for i in keep)
    model.config.num_hidden_layers = n
    return keep


CARDS = {
    "cross-encoder": ("text-classification", "cross-encoder", "Cascade cross-encoder reranker",
                      "A one-logit sequence-classification model: score = relevance of (query, passage). Loads "
                      "unchanged in\n`transformers` (AutoModelForSequenceClassification) and sentence-transformers' "
                      "`CrossEncoder`."),
    "late-interaction": ("feature-extraction", "late-interaction", "Cascade late-interaction encoder",
                         "A token encoder for ColBERT-style MaxSim: `transformers` AutoModel weights plus a linear "
                         "projection\n(`late_interaction.json`, `late_projection.safetensors`). Use it with "
                         "`cascade index --late-interaction DIR`\nor `LateInteraction(DIR)`."),
}


def model_card(config: TrainConfig, data: TrainData, result: TrainResult, kind: str = "cross-encoder") -> str:
    pipeline, tag, title, what = CARDS[kind]
    hardware = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    sources = "\n".join(f"- {s['dataset']}: {s['train_queries']} training queries, {s['dev_queries']} dev queries "
                        f"({s['dev']})" for s in data.sources)
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: {pipeline}
tags: [{tag}, reranker, cascade]
---
# {title}

{what}

## Base model
`{config.base}` ({base_license(config.base)}).

## Training data
{sources}

Hard negatives: the top {config.mine_depth} of Cascade's hybrid first stage minus judged positives
(skipping the top {config.skip_top}), plus {config.easy_negatives} random corpus passages per query.

## Training
{distilled(config)}Loss `{config.loss}` with 1 positive + {config.negatives} negatives per query,
{config.batch_queries} queries per step x {config.grad_accum} accumulation, lr {config.lr}, max length
{config.max_length}, seed {config.seed}; {result.steps} steps in {result.seconds / 60:.1f} min on
{platform.machine()} ({hardware}).
Checkpoint chosen at step {result.best_step} by dev nDCG@10 of reranking the first stage's top {config.mine_depth}.

Command: `{config.command}`

## Dev results (nDCG@10, reranking the top {config.mine_depth})
| first stage (hybrid RRF) | this reranker |
|---:|---:|
| {result.first_stage_dev_ndcg:.4f} | {result.best_dev_ndcg:.4f} |
"""
