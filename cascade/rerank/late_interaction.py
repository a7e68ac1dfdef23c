"""Late interaction (ColBERT-style) as a standalone reranker: score = sum over query tokens of the
best-matching document token.

That reads each passage token-by-token like a cross-encoder would, at the price of a matrix product
instead of a transformer pass per pair: a cheap stage between the first stage and the cross-encoder. In a
cascade over an index the passages' token vectors were stored at index time (`cascade.retrieve.tokens`);
standalone, they are encoded at query time (`cascade.models.token_encoder`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cascade.models.hub import DEFAULT_ENCODER
from cascade.models.token_encoder import TokenEncoder
from cascade.rerank.base import Encoded, Reranker
from cascade.rerank.budget import CostModel
from cascade.retrieve.tokens import maxsim


class LateInteraction(Reranker):
    """Late interaction as a standalone reranker: documents are encoded at query time (no index needed).

    In a cascade over an index the stored token vectors are used instead (`Cascade(..., late_depth=...)`).
    """

    def __init__(self, model: str | TokenEncoder = DEFAULT_ENCODER, device: str | None = None,
                 precision: str = "auto", max_length: int = 256):
        self.encoder = model if isinstance(model, TokenEncoder) else TokenEncoder(
            model, device=device, precision=precision, doc_max_length=max_length)
        self.model_id = self.encoder.model_id
        self.cost = CostModel()

    @property
    def signature(self) -> str:
        return f"late:{self.model_id}@{self.encoder.doc_max_length}"

    def encode(self, pairs: Sequence[tuple[str, str]]) -> Encoded:
        enc = self.encoder.tokenizer([d for _, d in pairs], truncation=True, max_length=self.encoder.doc_max_length)
        return Encoded(lengths=np.array([len(i) for i in enc["input_ids"]]), features=list(pairs))

    def score(self, encoded: Encoded, batch: np.ndarray) -> np.ndarray:
        pairs = [encoded.features[i] for i in batch]
        unique = list(dict.fromkeys(q for q, _ in pairs))
        queries = dict(zip(unique, self.encoder.encode(unique, query=True)))
        docs = self.encoder.encode([d for _, d in pairs])
        return np.array([maxsim(queries[q], d, [len(d)])[0] for (q, _), d in zip(pairs, docs)], dtype=np.float32)
