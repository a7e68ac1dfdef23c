"""Cross-encoder reranking: a Hugging Face sequence-classification model with one output logit."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from cascade.errors import CascadeError
from cascade.models import backends
from cascade.models.hub import read_config, resolve
from cascade.models.runtime import (
    autocast_dtype,
    compute_in,
    load_model,
    model_signature,
    padded_groups,
    padded_length,
    pick_device,
    requested_precision,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from cascade.rerank.base import Encoded, Reranker
from cascade.rerank.budget import CostModel
from cascade.rerank.pairs import WORD_CAP, PairTokens, cut

PROBE_QUERIES = 3  # demo queries whose pairs with every demo passage probe backends and calibrate int8


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


def config_activation(config: dict):
    """The activation sentence-transformers would apply: the one its config names (Identity: none), else a
    sigmoid, as for any one-logit cross-encoder."""
    named = (config.get("sentence_transformers") or {}).get("activation_fn") \
        or config.get("sbert_ce_default_activation_function") or ""
    return None if named.endswith("Identity") else torch.sigmoid


def pair_budget(model, tokenizer, max_length: int | None, fit: int | None = None) -> int:
    """Tokens per (query, passage) pair: the caller's, else the tokenizer's `model_max_length` (which
    `cascade train` sets to the length the model was trained at), never past the position table, nor past
    `fit` (what the texts need: an index's `IndexSettings.pair_tokens`)."""
    limit = min(model.config.max_position_embeddings, fit or model.config.max_position_embeddings)
    return min(max_length or tokenizer.model_max_length or limit, limit)


class CrossEncoder(Reranker):
    """Reads query and passage together; far more precise than the first stage, and far slower.

    Pairs are tokenised once and each is padded to its own length rounded up (`cascade.models.runtime`), so a
    pair scores the same alone or micro-batched with others (to 2.3e-7 eager, exactly fused); inference runs under
    `torch.inference_mode()`. `backend` runs the model eager ("torch"), traced and fused by oneDNN Graph
    ("fused", 1.47x on 30 pairs on the AMX CPU) or as OpenVINO int8 ("openvino", on CPUs without AMX); "auto"
    measures them once per machine (`cascade.models.backends`).
    The weights are cast to the compute dtype (bf16 where it pays: AMX, Zen 4, CUDA; the one-logit head stays fp32):
    on this 2-core CPU that is 1.2x faster than fp32 weights under autocast, with the same scores to 3
    decimals. A warm-up batch at load keeps one-off kernel setup out of the first query's latency and
    seeds the cost estimate budgets plan with. `predict`/`rank` apply the model's activation as
    sentence-transformers does (a sigmoid unless its config names Identity); search ranks by the raw logits.
    """

    def __init__(self, model: str, device: str | None = None, precision: str = "auto", max_length: int | None = None,
                 warm_up: bool = True, fit: int | None = None, backend: str = "auto"):
        self.model_id = model
        wanted = backends.requested(backend)
        self.path = resolve(model)
        check_cross_encoder_config(model, read_config(self.path))
        self.weights = weights_fingerprint(self.path)
        self.device = pick_device(device)
        # int8 is quantised from the fp32 weights, not from a bf16 copy of them
        self.precision = requested_precision(precision)
        self.dtype = None if wanted == "openvino" else autocast_dtype(self.device, self.precision)
        self.tokenizer, self.model = load_model("AutoModelForSequenceClassification", self.path, model, "reranker",
                                                self.device, self.dtype)
        check_cross_encoder_config(model, self.model.config.to_dict())
        self.activation = config_activation(self.model.config.to_dict())
        self.max_length = pair_budget(self.model, self.tokenizer, max_length, fit)
        self.pairs = PairTokens(self.tokenizer, self.max_length)
        self.tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer) if self.pairs.exact else None
        self.cost = CostModel()
        self.forward, self.backend, self.verdict = backends.eager(self.model), "torch", None
        if wanted != "torch":
            self.use_backend(wanted)
        if warm_up:
            self.warm_up()

    @classmethod
    def wrap(cls, model, tokenizer, model_id: str, precision: str = "auto",
             max_length: int | None = None) -> "CrossEncoder":
        """A CrossEncoder around an in-memory model (e.g. one being trained, whose fp32 weights stay as they
        are: it runs under autocast), without reloading it."""
        self = cls.__new__(cls)
        self.model_id = self.path = model_id
        self.weights = ""  # in memory, changing as it trains: never cached across processes
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.precision = requested_precision(precision)
        self.dtype = autocast_dtype(self.device, self.precision)
        self.max_length = pair_budget(model, tokenizer, max_length)
        self.pairs = PairTokens(tokenizer, self.max_length)
        self.cost = CostModel()
        self.activation = config_activation(model.config.to_dict())
        self.forward, self.backend, self.verdict = backends.eager(model), "torch", None
        return self

    @property
    def signature(self) -> str:
        """Model (its id and which weights it holds), truncation, precision and backend: a bf16 score is not
        served to an fp32 process from a shared cache, nor a fused or int8 one to an eager one, nor an old
        model's score once the folder holds a retrained one."""
        return self._signature + ("" if self.backend == "torch" else f"+{self.backend}")

    @property
    def _signature(self) -> str:
        return model_signature(self.model_id, self.weights, self.max_length, self.dtype)

    def use_backend(self, backend: str) -> None:
        """Run the model as `backend` says ("fused", "openvino", or "auto": the cached or freshly probed verdict
        for this machine, model and window); a model "auto" cannot trace or convert stays eager. The demo's
        queries with every demo passage are the probe pairs and int8's calibration."""
        filler = " ".join(["retrieval"] * self.max_length)
        example = self._padded([("warm up", filler), ("warm up", "short")])
        self.forward, self.backend, self.verdict = backends.select(
            backend, self._signature, self.model, self.forward, example,
            timing=lambda: self._groups(backends.probe_pairs()[0][:30]),
            probes=lambda: [self._padded(p) for p in backends.probe_pairs(queries=PROBE_QUERIES)],
            precision=self.precision)

    def _groups(self, pairs: Sequence[tuple[str, str]]) -> list[dict]:
        """The padded batches one `score` call on `pairs` runs: what a search's rerank costs."""
        encoded = self.encode(pairs)
        return [features for _, features in padded_groups(self.tokenizer, encoded.features, np.arange(len(pairs)),
                                                          self.device, self.max_length, self.dtype)]

    def _padded(self, pairs: Sequence[tuple[str, str]]) -> dict:
        """`pairs` as one batch of tensors padded to the longest (for probes, not scoring)."""
        features = self.encode(pairs).features
        return self.tokenizer.pad({k: list(v) for k, v in features.items()}, padding="longest",
                                  return_tensors="pt").to(self.device)

    def warm_up(self) -> None:
        """Full-length batches, each run twice: the first call pays kernel setup, the second is timed into `cost`.
        Fused, search's 32 pairs a call get a graph of their own too, so a first query does not pay for it."""
        filler = " ".join(["retrieval"] * self.max_length)
        for size in (8, 32) if self.backend == "fused" else (8,):
            encoded, batch = self.encode([("warm up", filler)] * size), np.arange(size)
            with torch.inference_mode():
                self.score(encoded, batch)
            self.timed_score(encoded, batch)

    def know_passages(self, texts: Sequence[str], tokens: Sequence[tuple[list[int], int]]) -> None:
        self.pairs.remember(texts, tokens)

    def encode(self, pairs: Sequence[tuple[str, str]]) -> Encoded:
        """Token ids of every pair, assembled from each text's ids (`cascade.rerank.pairs`: a query tokenised
        once, a passage once per process); `lengths` are the padded lengths the pairs will be scored at."""
        if self.pairs.exact:
            enc, _ = self.pairs.features(pairs)
        else:  # a tokenizer pairs.py does not reproduce: its own pairing, on texts cut to what can matter
            words = WORD_CAP * self.max_length
            enc = self.tokenizer([cut(q, words) for q, _ in pairs], [cut(d, words) for _, d in pairs],
                                 truncation="longest_first", max_length=self.max_length)
        lengths = [padded_length(len(ids), self.max_length) for ids in enc["input_ids"]]
        return Encoded(lengths=np.array(lengths, dtype=np.int64), features=enc)

    @torch.inference_mode()
    def score(self, encoded: Encoded, batch: np.ndarray) -> np.ndarray:
        """Each pair padded to its own padded length, so its score does not depend on its batch mates."""
        scores = np.zeros(len(batch), dtype=np.float32)
        for positions, features in padded_groups(self.tokenizer, encoded.features, batch, self.device,
                                                 self.max_length, self.dtype):
            with compute_in(self.model, self.dtype):
                logits = self.forward(features)[: len(positions)]
                scores[positions] = logits.float().reshape(-1).cpu().numpy()
        return scores
