"""Train the late-interaction stage: fine-tune the token encoder and a linear projection for MaxSim.

Same data, loop, losses, checkpoints and dev selection as the cross-encoder (cascade/train/trainer.py); only
the model and the scoring of a pair differ. Query and passage are encoded apart, as at search time, and a
pair scores the sum over query tokens of the best cosine with any passage token. The projection starts
as a random orthonormal map, which keeps cosines roughly intact, so training begins near the untrained
encoder's quality instead of from noise.
"""

from __future__ import annotations

import json
from typing import Sequence

import torch

from cascade.fileio import atomic_write
from cascade.models.runtime import autocast
from cascade.models.token_encoder import CONFIG, PROJECTION, TokenEncoder, load_projection
from cascade.rerank.late_interaction import LateInteraction
from cascade.train.data import Example
from cascade.train.surgery import no_attention_dropout
from cascade.train.trainer import Trainer

DEFAULT_DIM = 128  # ColBERT's: a third of MiniLM's 384 per stored token


class LateModel(torch.nn.Module):
    """The encoder and projection as one module, so optimiser, checkpoints and resume treat them as one."""

    def __init__(self, encoder: torch.nn.Module, projection: torch.nn.Linear):
        super().__init__()
        self.encoder, self.projection = encoder, projection


def padded_maxsim(query: torch.Tensor, query_mask: torch.Tensor, docs: torch.Tensor,
                  doc_mask: torch.Tensor) -> torch.Tensor:
    """MaxSim of pair p = sum over query p's real tokens of max over doc p's real tokens ([P, Lq, d], [P, Ld, d])."""
    sims = torch.einsum("pqd,pkd->pqk", query, docs)
    sims = sims.masked_fill(~doc_mask.bool()[:, None, :], float("-inf"))
    return (sims.max(dim=2).values * query_mask).sum(dim=1)


class LateTrainer(Trainer):
    kind = "late-interaction"

    def build_model(self, path: str) -> bool:
        from pathlib import Path

        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model_config = AutoConfig.from_pretrained(path)
        no_attention_dropout(model_config)
        encoder = AutoModel.from_pretrained(path, config=model_config)
        projection = load_projection(Path(path), model_config.hidden_size)
        if projection is None:
            projection = torch.nn.Linear(model_config.hidden_size, self.config.late_dim or DEFAULT_DIM, bias=False)
            torch.nn.init.orthogonal_(projection.weight)
        self.model = LateModel(encoder, projection).float().to(self.device)
        self.tokens = TokenEncoder.wrap("training", self.tokenizer, self.model.encoder, self.model.projection,
                                        self.device, self.config.precision, self.config.max_length)
        return False

    def pair_scores(self, pairs: Sequence[tuple[Example, str]]) -> torch.Tensor:
        queries = list(dict.fromkeys(ex.query for ex, _ in pairs))
        q = self.tokenizer(queries, truncation=True, max_length=self.tokens.query_max_length, padding=True,
                           return_tensors="pt").to(self.device)
        d = self.tokenizer([doc for _, doc in pairs], truncation=True, max_length=self.config.max_length,
                           padding=True, return_tensors="pt").to(self.device)
        with autocast(self.device, self.dtype, d["input_ids"].numel()):
            qv, dv = self.tokens.token_vectors(q), self.tokens.token_vectors(d)
        row = torch.tensor([queries.index(ex.query) for ex, _ in pairs], device=self.device)
        return padded_maxsim(qv[row], q["attention_mask"][row].float(), dv, d["attention_mask"])

    def scorer(self) -> LateInteraction:
        return LateInteraction(self.tokens)

    def save_weights(self, dtype: torch.dtype) -> None:
        from safetensors.torch import save_file

        encoder = self.model.encoder
        encoder.config.architectures = [type(encoder).__name__]
        encoder.to(dtype).save_pretrained(self.out)
        weights = {"weight": self.model.projection.weight.detach().to(dtype).cpu().contiguous()}
        save_file(weights, str(self.out / PROJECTION))
        atomic_write(self.out / CONFIG, json.dumps({"dim": self.model.projection.out_features,
                                                    "query_max_length": self.tokens.query_max_length}))
