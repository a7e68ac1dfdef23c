"""Fine-tune a cross-encoder on relevance labels with hard negatives; keep the checkpoint best on dev.

Seeded and resumable: every evaluation writes `checkpoint.pt` (model, optimizer, schedule, RNG, best
weights) atomically, and `resume=True` continues from it. bf16 autocast where it pays (AMX, Zen 4) and on CUDA.
"""

from __future__ import annotations

import io
import json
import math
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cascade.errors import CascadeError
from cascade.fileio import atomic_write, usual_modes
from cascade.models.hub import resolve
from cascade.models.runtime import autocast, autocast_dtype, pick_device, quiet_transformers
from cascade.rerank.cross_encoder import CrossEncoder
from cascade.train.card import model_card
from cascade.train.config import TrainConfig, TrainData, TrainResult
from cascade.train.data import Example
from cascade.train.dev import dev_report, selection_score
from cascade.train.losses import DISTILL_LOSSES, get_loss
from cascade.train.surgery import keep_layers, no_attention_dropout, param_groups

CHECKPOINT = "checkpoint.pt"
FRESH_HEAD_LR = 1e-3
GRADED_SHARE = 0.5  # how often a graded query's list also holds a lower-graded positive, to learn 2 > 1 > 0


class Trainer:
    """Cross-encoder training; `LateTrainer` (cascade/train/late.py) swaps in the late-interaction model."""

    kind = "cross-encoder"

    def __init__(self, config: TrainConfig, data: TrainData):
        quiet_transformers()
        self.config, self.data = config, data
        self.loss_fn = get_loss(config.loss)
        self.distill_fn = get_loss(config.distill_loss, DISTILL_LOSSES) if config.teachers else None
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
            self.fresh_head = self.build_model(resolve(config.base))
        except (OSError, ValueError) as e:
            raise CascadeError(f"could not load base model {config.base!r}: {str(e).splitlines()[0]}") from None
        if config.layers:
            keep_layers(self.model, config.layers)
        per_step = config.batch_queries * config.grad_accum
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * len(data.examples) / per_step))
        head_lr = config.head_lr or (FRESH_HEAD_LR if self.fresh_head else config.lr)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, config.lr, head_lr), weight_decay=0.01)
        warm = max(1, int(config.warmup * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: min((s + 1) / warm, max(0.0, (self.total_steps - s) / max(1, self.total_steps - warm))))
        self.step, self.best, self.best_step, self.bad_evals = 0, -1.0, 0, 0
        self.best_dev: dict[str, dict[str, float]] = {}
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

    def sample(self, batch: Sequence[Example]) -> tuple[list[tuple[Example, str]], torch.Tensor]:
        """Per query: one positive, then `negatives` hard negatives (with replacement if too few); and each
        item's target gain relative to the positive (2^grade - 1). A graded query's list sometimes holds a
        lower-graded positive in place of its first negative, so the model also learns 2 > 1."""
        pairs, targets = [], []
        n = self.config.negatives
        for ex in batch:
            negs = (self.rng.sample(ex.negatives, n) if len(ex.negatives) >= n else self.rng.choices(ex.negatives, k=n))
            k = self.rng.randrange(len(ex.positives))
            gains = [2.0 ** ex.grade(k) - 1] + [0.0] * n
            lower = [j for j in range(len(ex.positives)) if 0 < ex.grade(j) < ex.grade(k)]
            if lower and self.rng.random() < GRADED_SHARE:
                j = self.rng.choice(lower)
                negs[0], gains[1] = ex.positives[j], 2.0 ** ex.grade(j) - 1
            pairs += [(ex, ex.positives[k])] + [(ex, d) for d in negs]
            targets.append([g / gains[0] for g in gains])
        return pairs, torch.tensor(targets, device=self.device)

    def epoch_order(self) -> list[int]:
        """One epoch's example indices: each source drawn in proportion to its weight (1 unless told) times its
        size, so `source_weights` tilts the mix without repeating or dropping a source's examples wholesale."""
        examples, weights = self.data.examples, self.config.source_weights
        unknown = set(weights) - {ex.source for ex in examples}
        if unknown:
            raise CascadeError(f"source_weights names unknown source(s) {', '.join(sorted(unknown))}; the sources are "
                               f"{', '.join(sorted({ex.source for ex in examples}))}")
        return self.rng.choices(range(len(examples)), weights=[weights.get(ex.source, 1.0) for ex in examples],
                                k=len(examples)) if weights else self.rng.sample(range(len(examples)), len(examples))

    def pair_scores(self, pairs: Sequence[tuple[Example, str]]) -> torch.Tensor:
        """Differentiable float32 scores of (example's query, passage) pairs."""
        features = self.tokenizer([ex.query for ex, _ in pairs], [d for _, d in pairs], truncation="longest_first",
                                  max_length=self.config.max_length, padding=True, return_tensors="pt").to(self.device)
        with autocast(self.device, self.dtype, features["input_ids"].numel()):
            return self.model(**features).logits.float().view(-1)

    def batch_loss(self, batch: Sequence[Example]) -> torch.Tensor:
        pairs, targets = self.sample(batch)
        scores = self.pair_scores(pairs).view(len(batch), 1 + self.config.negatives)
        if self.distill_fn is None:
            return self.loss_fn(scores, targets)
        teacher = torch.tensor([ex.teacher[d] for ex, d in pairs], device=self.device).view_as(scores)
        w = self.config.label_weight
        return (1 - w) * self.distill_fn(scores, teacher) + (w * self.loss_fn(scores, targets) if w else 0.0)

    def evaluate(self) -> dict[str, dict[str, float]]:
        self.model.eval()
        report = dev_report(self.scorer(), self.data.dev)
        self.model.train()
        return report

    def run(self, progress: bool = True, log: bool = False) -> TrainResult:
        """Train to `max_steps` or until dev stops improving `patience` times. `progress`: a bar; `log`: without
        one, a line on stderr at every dev evaluation (what a log file of a long run needs)."""
        start = time.perf_counter()
        if self.config.resume:
            self.load_checkpoint()
        first_stage = selection_score(dev_report(None, self.data.dev))
        if self.step == 0 and not self.fresh_head:  # a trained starting point is a candidate: never end below it
            report = self.evaluate()
            self.history.append({"step": 0, "dev": report, "dev_ndcg@10": selection_score(report)})
            self.keep_if_best(report)
            if progress or log:
                tqdm.write(f"step 0 (the base model): dev nDCG@10 {self.best:.4f}", file=sys.stderr)
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="training", unit="step", disable=not progress)
        first_step, looping = self.step, time.perf_counter()
        while self.step < self.total_steps and self.bad_evals < self.config.patience:
            losses = []
            for _ in range(self.config.grad_accum):
                if len(self.order) < self.config.batch_queries:
                    self.order += self.epoch_order()
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
                entry["dev"] = report = self.evaluate()
                entry["dev_ndcg@10"] = ndcg = selection_score(report)
                self.keep_if_best(report)
                self.save_checkpoint()
                if progress or log:
                    pace = eta(looping, self.step - first_step, self.total_steps - self.step)
                    tqdm.write(f"step {self.step}/{self.total_steps}: dev nDCG@10 {ndcg:.4f} (best {self.best:.4f} "
                               f"at step {self.best_step}); {pace}", file=sys.stderr)  # above the bar, if any
            bar.set_postfix(loss=f"{entry['loss']:.3f}", dev=f"{self.best:.4f}")
            bar.update(1)
        bar.close()
        result = TrainResult(steps=self.step, best_step=self.best_step, best_dev_ndcg=self.best,
                             first_stage_dev_ndcg=first_stage, seconds=time.perf_counter() - start,
                             history=self.history, best_dev=self.best_dev)
        self.save_model(result)
        return result

    def keep_if_best(self, report: dict[str, dict[str, float]]) -> None:
        """Keep the weights as they are now if `report` is the best dev result so far; else count a bad eval."""
        ndcg = selection_score(report)
        if ndcg > self.best:
            self.best, self.best_step, self.bad_evals, self.best_dev = ndcg, self.step, 0, report
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad_evals += 1

    def save_checkpoint(self) -> None:
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "step": self.step, "best": self.best,
                    "best_step": self.best_step, "bad_evals": self.bad_evals, "best_state": self.best_state,
                    "best_dev": self.best_dev,
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
        self.order, self.best_dev = state["order"], state.get("best_dev", {})
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
        usual_modes(self.out)

    def save_weights(self, dtype: torch.dtype) -> None:
        self.model.config.architectures = [type(self.model).__name__]
        self.model.to(dtype).save_pretrained(self.out)


def eta(start: float, done: int, left: int) -> str:
    """"2.71 s/step, about 41 min left" from the wall time of the steps done this run."""
    per = (time.perf_counter() - start) / max(1, done)
    return f"{per:.2f} s/step, about {per * left / 60:.0f} min left"
