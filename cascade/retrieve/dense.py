"""Dense first stage: a bi-encoder (mean-pooled, L2-normalised) and a FAISS inner-product index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm

from cascade.inference import autocast, autocast_dtype, length_sorted_batches, load_model, pick_device
from cascade.models import DEFAULT_ENCODER, resolve


class Encoder:
    """Sentence embeddings from a Hugging Face encoder, as sentence-transformers computes them.

    Pooling and max length come from the sentence-transformers files next to the weights
    (1_Pooling/config.json, sentence_bert_config.json) when present: mean pooling, 256 tokens
    for all-MiniLM-L6-v2.
    """

    def __init__(self, model: str = DEFAULT_ENCODER, device: str | None = None, precision: str = "auto",
                 max_length: int | None = None):
        self.model_id = model
        self.path = resolve(model)
        self.device = pick_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        self.tokenizer, self.model = load_model("AutoModel", self.path, model, "encoder", self.device)
        self.pooling = self._read_st_file("1_Pooling/config.json").get("pooling_mode_cls_token") and "cls" or "mean"
        st_max = self._read_st_file("sentence_bert_config.json").get("max_seq_length")
        self.max_length = max_length or st_max or min(512, self.model.config.max_position_embeddings)
        self.dim = int(self.model.config.hidden_size)

    def _read_st_file(self, name: str) -> dict:
        path = Path(self.path) / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """Unit-norm float32 embeddings, one row per text, in input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        ids = enc["input_ids"]
        bar = tqdm(total=len(texts), desc="encoding passages", unit="psg", disable=not progress)
        for batch in length_sorted_batches([len(i) for i in ids], batch_size):
            features = self.tokenizer.pad({k: [enc[k][i] for i in batch] for k in enc.keys()},
                                          return_tensors="pt").to(self.device)
            with autocast(self.device, self.dtype, features["input_ids"].numel()):
                hidden = self.model(**features).last_hidden_state
            hidden = hidden.float()
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = features["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[batch] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
            bar.update(len(batch))
        bar.close()
        return out


class DenseIndex:
    """Exact inner-product search over unit vectors (= cosine), FAISS IndexFlatIP."""

    def __init__(self, index: faiss.Index):
        self._index = index

    @classmethod
    def from_vectors(cls, vectors: np.ndarray) -> "DenseIndex":
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(index)

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def vectors(self) -> np.ndarray:
        return self._index.reconstruct_n(0, self.size)

    def search(self, query_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.size)
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        scores, idx = self._index.search(np.asarray(query_vector, dtype=np.float32).reshape(1, -1), k)
        keep = idx[0] >= 0
        return idx[0][keep].astype(np.int64), scores[0][keep]

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path) -> "DenseIndex":
        return cls(faiss.read_index(str(path)))
