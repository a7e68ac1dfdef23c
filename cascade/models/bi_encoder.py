"""The bi-encoder: one unit vector per text (mean-pooled, L2-normalised), as sentence-transformers computes it.

The first stage's dense retrieval searches these vectors; it lives with the other encoders so the CPU
backends plug in at one place and `retrieve/` stays NumPy/FAISS.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cascade.errors import CascadeError
from cascade.models import backends
from cascade.models.hub import DEFAULT_ENCODER, resolve
from cascade.models.runtime import (
    autocast_dtype,
    length_sorted_batches,
    load_model,
    model_signature,
    padded_groups,
    pick_device,
    precision_of,
    requested_precision,
    weights_fingerprint,
)
from cascade.models.verdicts import Verdict


class Encoder:
    """Sentence embeddings from a Hugging Face encoder, as sentence-transformers computes them.

    Pooling and max length come from the sentence-transformers files next to the weights
    (1_Pooling/config.json, sentence_bert_config.json) when present: mean pooling, 256 tokens
    for all-MiniLM-L6-v2. Queries run on fp32 weights; passages on a copy in the compute dtype, made on first
    use, run as `backend` says (`cascade.models.backends`). 1,024 SciFact passages a second on the 2-core AMX
    CPU: 65 fp32, 162 under bf16 autocast (before), 204 with bf16 weights, 243 fused (3.7x fp32).
    """

    def __init__(self, model: str = DEFAULT_ENCODER, device: str | None = None, precision: str = "auto",
                 max_length: int | None = None, backend: str = "auto"):
        self.model_id = model
        self.path = resolve(model)
        self.device = pick_device(device)
        self.backend = backends.requested(backend)  # what was asked for; the passage model settles it
        # int8 is quantised from the fp32 weights, not from a bf16 copy of them
        self.precision = requested_precision(precision)
        self.dtype = None if self.backend == "openvino" else autocast_dtype(self.device, self.precision)
        # fp32 weights, for queries; passages get a copy in the compute dtype (`passage_forward`)
        self.tokenizer, self.model = load_model("AutoModel", self.path, model, "encoder", self.device)
        self.pooling = self._read_st_file("1_Pooling/config.json").get("pooling_mode_cls_token") and "cls" or "mean"
        st_max = self._read_st_file("sentence_bert_config.json").get("max_seq_length")
        self.max_length = max_length or st_max or min(512, self.model.config.max_position_embeddings)
        self.dim = int(self.model.config.hidden_size)
        self.verdict: Verdict | None = None
        self._passage_forward: backends.Forward | None = None

    def passage_forward(self) -> backends.Forward:
        """Passages' model: the weights in the compute dtype, eager, fused or int8 (built on first use, so a process
        that only encodes queries never pays for it)."""
        if self._passage_forward is None:
            model = self.model if self.dtype is None else copy.deepcopy(self.model).to(self.dtype)
            plain = backends.eager(model, "last_hidden_state")
            signature = "encoder:" + model_signature(self.model_id, weights_fingerprint(self.path), self.max_length,
                                                     self.dtype)
            texts = backends.probe_texts()
            self._passage_forward, self.backend, self.verdict = backends.select(
                self.backend, signature, model, plain, self._padded(["warm up " * self.max_length, "short"]),
                timing=lambda: [self._padded(["warm up " * self.max_length] * 16)],
                probes=lambda: [self._padded(texts[i : i + 16]) for i in range(0, len(texts), 16)],
                output="last_hidden_state", precision=self.precision)
        return self._passage_forward

    def settled(self) -> dict:
        """Encoder(**settled()) encodes passages as this one does: the precision and backend this process chose
        for it, not what another process (a Ray worker with one thread) would measure for itself."""
        self.passage_forward()
        return {"model": self.model_id, "precision": precision_of(self.dtype), "backend": self.backend,
                "max_length": self.max_length}

    def _padded(self, texts: list[str]) -> dict:
        """`texts` as one batch of tensors padded to the longest (for probes, not encoding)."""
        return dict(self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True,
                                   return_tensors="pt").to(self.device))

    def _read_st_file(self, name: str) -> dict:
        path = Path(self.path) / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def encode_query(self, query: str) -> np.ndarray:
        """One query's unit-norm vector, in fp32: a query is one short text, where bf16 does not pay (on the
        AMX machine 7.5 ms fp32, 8.6 ms bf16 alone, 22.7 ms bf16 topped up to be batch-invariant;
        `benchmarks/batch_invariance.py`), and search always encodes it alone, so its vector is the same on
        every path."""
        return self.encode([query], query=True)[0]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 16, progress: bool = False,
               query: bool = False, on_batch: Callable[[int], object] | None = None) -> np.ndarray:
        """Unit-norm float32 embeddings, one row per text, in input order, the same whatever the batching
        (`cascade.models.runtime`). Passages run at the model's precision; `query=True` runs fp32. `on_batch` is
        told how many texts each batch encoded (a caller's progress bar moves per batch, not per call)."""
        dtype = None if query else self.dtype
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        forward = backends.eager(self.model, "last_hidden_state") if query else self.passage_forward()
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        ids = enc["input_ids"]
        bar = tqdm(total=len(texts), desc="encoding passages", unit="psg", disable=not progress)
        for batch in length_sorted_batches([len(i) for i in ids], batch_size):
            for positions, features in padded_groups(self.tokenizer, enc, batch, self.device, self.max_length,
                                                        dtype):
                hidden = forward(dict(features))[: len(positions)].float()
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = features["attention_mask"][: len(positions)].unsqueeze(-1).float()
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[batch[positions]] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(len(batch))
        bar.close()
        broken = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if len(broken):  # stored, a NaN vector would rank garbage without a word; refuse it by name instead
            raise CascadeError(f"encoder {self.model_id} gave NaN or infinite vectors for {len(broken)} of "
                               f"{len(texts)} texts (the first: {texts[broken[0]][:60]!r}); its weights or precision "
                               "are broken (CASCADE_PRECISION=fp32 rules the precision out)")
        return out
