"""Late interaction (ColBERT-style): score = sum over query tokens of the best-matching document token.

Documents are encoded once, at index time, into one unit vector per token (`TokenStore`, fp16 or int8);
a query is encoded at search time and compared with every stored token of each candidate (MaxSim).
That reads each passage token-by-token like a cross-encoder would, at the price of a matrix product
instead of a transformer pass per pair: a cheap stage between the first stage and the cross-encoder.

The token encoder is any Hugging Face encoder (default: the bundled MiniLM bi-encoder), optionally
followed by a linear projection that `cascade train --kind late-interaction` learns and saves beside
the weights (`late_interaction.json` + `late_projection.safetensors`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cascade.errors import CascadeError
from cascade.inference import autocast_dtype, compute_in, length_sorted_batches, load_model, padded_groups, pick_device
from cascade.models import DEFAULT_ENCODER, resolve
from cascade.rerank.base import Encoded, Reranker
from cascade.rerank.budget import CostModel

CONFIG = "late_interaction.json"
PROJECTION = "late_projection.safetensors"
DTYPES = ("fp16", "int8")


class TokenEncoder:
    """Unit-norm token embeddings (padding dropped), optionally projected to a smaller dimension."""

    def __init__(self, model: str = DEFAULT_ENCODER, device: str | None = None, precision: str = "auto",
                 doc_max_length: int = 256, query_max_length: int = 64):
        path = Path(resolve(model))
        dev = pick_device(device)
        tokenizer, encoder = load_model("AutoModel", str(path), model, "token encoder", dev)  # as the bi-encoder
        projection = load_projection(path, int(encoder.config.hidden_size))
        self._init(model, tokenizer, encoder, projection, dev, precision, doc_max_length, query_max_length)

    @classmethod
    def wrap(cls, model_id: str, tokenizer, encoder: torch.nn.Module, projection: torch.nn.Linear | None,
             device: torch.device, precision: str = "auto", doc_max_length: int = 256,
             query_max_length: int = 64) -> "TokenEncoder":
        """A TokenEncoder over modules already in memory (training scores dev queries with the live weights)."""
        self = cls.__new__(cls)
        self._init(model_id, tokenizer, encoder, projection, device, precision, doc_max_length, query_max_length)
        return self

    def _init(self, model_id, tokenizer, encoder, projection, device, precision, doc_max_length, query_max_length):
        self.model_id, self.tokenizer, self.model, self.device = model_id, tokenizer, encoder, device
        self.projection = projection.to(device) if projection is not None else None
        self.dtype = autocast_dtype(device, precision)
        self.doc_max_length, self.query_max_length = doc_max_length, query_max_length
        self.dim = self.projection.out_features if self.projection is not None else int(encoder.config.hidden_size)

    def token_vectors(self, features: dict) -> torch.Tensor:
        """[batch, tokens, dim] unit vectors for tokenised `features` (differentiable: training uses it)."""
        hidden = self.model(**features).last_hidden_state
        if self.projection is not None:
            hidden = self.projection(hidden.to(self.projection.weight.dtype))
        return torch.nn.functional.normalize(hidden.float(), dim=-1)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], query: bool = False, batch_size: int = 16, progress: bool = False,
               dtype: type = np.float32) -> list[np.ndarray]:
        """One [tokens, dim] array per text, in input order (float16 halves an index build's memory)."""
        max_length = self.query_max_length if query else self.doc_max_length
        compute = None if query else self.dtype  # queries in fp32, as the bi-encoder's
        enc = self.tokenizer(list(texts), truncation=True, max_length=max_length)
        out: list[np.ndarray] = [np.empty((0, self.dim), np.float32)] * len(texts)
        bar = tqdm(total=len(texts), desc="encoding passage tokens", unit="psg", disable=not progress)
        for batch in length_sorted_batches([len(i) for i in enc["input_ids"]], batch_size):
            for positions, features in padded_groups(self.tokenizer, enc, batch, self.device, max_length, compute):
                with compute_in(self.model, compute):
                    vectors = self.token_vectors(features).cpu().numpy()
                for row, i in enumerate(batch[positions]):
                    out[i] = vectors[row, : len(enc["input_ids"][i])].astype(dtype)
            bar.update(len(batch))
        bar.close()
        return out


def load_projection(path: Path, hidden: int) -> torch.nn.Linear | None:
    """The trained projection saved beside a late-interaction model's weights, if it has one."""
    config = path / CONFIG
    if not config.is_file():
        return None
    from safetensors.torch import load_file

    try:
        dim = int(json.loads(config.read_text(encoding="utf-8"))["dim"])
        projection = torch.nn.Linear(hidden, dim, bias=False)
        projection.load_state_dict(load_file(str(path / PROJECTION)))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CascadeError(f"{path}: unreadable late-interaction projection ({str(e).splitlines()[0]})") from None
    return projection.float().eval()


def maxsim(query: np.ndarray, tokens: np.ndarray, lengths: Sequence[int], scales: np.ndarray | None = None) -> np.ndarray:
    """Scores of consecutive documents whose token vectors are stacked in `tokens` ([sum(lengths), dim]).

    One matrix product for all candidates (token `j` scaled by `scales[j]` if given, as int8 rows are),
    then the max over each document's columns, summed over query tokens. A document with no tokens scores 0.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    scores = np.zeros(len(lengths), dtype=np.float32)
    nonempty = lengths > 0
    if not nonempty.any():
        return scores
    sims = np.asarray(query, dtype=np.float32) @ np.asarray(tokens, dtype=np.float32).T
    if scales is not None:
        sims *= scales
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[nonempty]
    scores[nonempty] = np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)
    return scores


class TokenStore:
    """Every passage's token vectors in one array with offsets; int8 with a scale per token, or fp16.

    Saved as .npy files and memory-mapped on load, so only the candidates' rows are ever read. int8 is the
    default: half the bytes of fp16, and int8 -> float32 is ~10x cheaper than fp16 -> float32 on CPUs
    without native fp16 conversion (measured on the 2-core AVX2 machine: 9 vs 100 ms for 150 passages).
    """

    def __init__(self, vectors: np.ndarray, offsets: np.ndarray, scales: np.ndarray | None = None):
        self.vectors, self.offsets, self.scales = vectors, offsets, scales

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray], dim: int, dtype: str = "int8") -> "TokenStore":
        if dtype not in DTYPES:
            raise CascadeError(f"unknown late-interaction dtype {dtype!r} (choose from {', '.join(DTYPES)})")
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(a) for a in arrays])
        vectors = np.empty((offsets[-1], dim), dtype=np.float16 if dtype == "fp16" else np.int8)
        scales = np.empty(offsets[-1], dtype=np.float32) if dtype == "int8" else None
        for a, start, end in zip(arrays, offsets, offsets[1:]):  # one passage at a time: no float32 copy of all
            if scales is None:
                vectors[start:end] = a
            else:
                rows = np.asarray(a, dtype=np.float32)
                scales[start:end] = np.abs(rows).max(axis=1).clip(min=1e-8) / 127.0
                vectors[start:end] = np.round(rows / scales[start:end, None])
        return cls(vectors, offsets, scales)

    @property
    def size(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def dtype(self) -> str:
        return "int8" if self.scales is not None else "fp16"

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes + self.offsets.nbytes + (self.scales.nbytes if self.scales is not None else 0))

    def get(self, i: int) -> np.ndarray:
        """Passage `i`'s token vectors as float32."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        rows = self.vectors[a:b].astype(np.float32)
        return rows * self.scales[a:b, None] if self.scales is not None else rows

    def score(self, query: np.ndarray, passages: Sequence[int]) -> np.ndarray:
        """MaxSim of `query` ([tokens, dim]) against each stored passage."""
        spans = [(int(self.offsets[i]), int(self.offsets[i + 1])) for i in passages]
        if not spans:
            return np.zeros(0, dtype=np.float32)
        tokens = np.concatenate([self.vectors[a:b] for a, b in spans])
        scales = np.concatenate([self.scales[a:b] for a, b in spans]) if self.scales is not None else None
        return maxsim(query, tokens, [b - a for a, b in spans], scales)

    def save(self, folder: Path) -> None:
        folder.mkdir()
        np.save(folder / "vectors.npy", self.vectors)
        np.save(folder / "offsets.npy", self.offsets)
        if self.scales is not None:
            np.save(folder / "scales.npy", self.scales)

    @classmethod
    def load(cls, folder: Path) -> "TokenStore":
        scales = folder / "scales.npy"
        return cls(np.load(folder / "vectors.npy", mmap_mode="r"), np.load(folder / "offsets.npy"),
                   np.load(scales) if scales.is_file() else None)


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
