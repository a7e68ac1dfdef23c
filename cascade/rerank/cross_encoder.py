"""Cross-encoder reranking: a Hugging Face sequence-classification model with one output logit."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cascade.errors import CascadeError
from cascade.inference import autocast, autocast_dtype, length_sorted_batches, load_model, pick_device
from cascade.models import read_config, resolve
from cascade.rerank.base import Reranker


def check_cross_encoder_config(name: str, config: dict) -> None:
    """Refuse checkpoints that would load with a randomly initialised head (silent garbage)."""
    if not config:
        return
    archs = config.get("architectures") or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise CascadeError(
            f"{name} is not a cross-encoder: its architecture is {', '.join(archs)}, "
            "not a *ForSequenceClassification model"
        )
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)
    if labels != 1:
        raise CascadeError(f"{name} is not a cross-encoder: it has {labels} output labels, a reranker needs 1")


def pair_budget(model, tokenizer, max_length: int | None) -> int:
    """Tokens per (query, passage) pair: the caller's, else the tokenizer's `model_max_length` (which
    `cascade train` sets to the length the model was trained at), never past the position table."""
    limit = model.config.max_position_embeddings
    return min(max_length or tokenizer.model_max_length or limit, limit)


class CrossEncoder(Reranker):
    """Reads query and passage together; far more precise than the first stage, and far slower.

    Pairs are tokenised once, sorted by length and padded per batch; inference runs under
    `torch.inference_mode()` with bf16 autocast where the hardware supports it. Scores are raw
    logits (apply a sigmoid yourself if you need [0, 1]; ranking is unaffected).
    """

    def __init__(self, model: str, device: str | None = None, precision: str = "auto", max_length: int | None = None):
        self.model_id = model
        self.path = resolve(model)
        check_cross_encoder_config(model, read_config(self.path))
        self.device = pick_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        self.tokenizer, self.model = load_model("AutoModelForSequenceClassification", self.path, model, "reranker",
                                                self.device)
        check_cross_encoder_config(model, self.model.config.to_dict())
        self.max_length = pair_budget(self.model, self.tokenizer, max_length)

    @classmethod
    def wrap(cls, model, tokenizer, model_id: str, precision: str = "auto",
             max_length: int | None = None) -> "CrossEncoder":
        """A CrossEncoder around an in-memory model (e.g. one being trained), without reloading it."""
        self = cls.__new__(cls)
        self.model_id = self.path = model_id
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.dtype = autocast_dtype(self.device, precision)
        self.max_length = pair_budget(model, tokenizer, max_length)
        return self

    @torch.inference_mode()
    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        scores = np.zeros(len(pairs), dtype=np.float32)
        if len(pairs) == 0:
            return scores
        queries = [q for q, _ in pairs]
        docs = [d for _, d in pairs]
        enc = self.tokenizer(queries, docs, truncation="longest_first", max_length=self.max_length)
        lengths = [len(ids) for ids in enc["input_ids"]]
        bar = tqdm(total=len(pairs), desc="reranking", unit="pair", disable=not progress)
        for batch in length_sorted_batches(lengths, batch_size):
            features = self.tokenizer.pad({k: [enc[k][i] for i in batch] for k in enc.keys()},
                                          return_tensors="pt").to(self.device)
            with autocast(self.device, self.dtype, features["input_ids"].numel()):
                logits = self.model(**features).logits
            scores[batch] = logits.float().reshape(-1).cpu().numpy()
            bar.update(len(batch))
        bar.close()
        return scores
