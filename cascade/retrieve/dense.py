"""Dense first stage: exact search over memory-mapped unit vectors (from `cascade.models.bi_encoder`), and
FAISS HNSW / IVF-PQ indexes for corpora where a full scan costs too much."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from cascade.errors import CascadeError
from cascade.retrieve.blas import one_thread
from cascade.retrieve.topk import top_k

VECTORS, ANN, SPEC = "vectors.npy", "ann.faiss", "ann.json"  # a dense index folder's files
ANN_KINDS = ("flat", "hnsw", "ivfpq")
ANN_DEFAULTS = {"hnsw": {"m": 32, "ef_construction": 80, "ef_search": 512},
                "ivfpq": {"nlist": 0, "pq_m": 0, "nbits": 8, "nprobe": 32, "refine": 4}}  # 0: sized to the data
EXACT_UP_TO = 100_000  # "auto" searches exactly below this many vectors per shard, HNSW above


def ann_spec(kind: str, size: int, dim: int, params: dict | None = None) -> dict:
    """The ANN kind and its full parameters: `auto` picks flat (exact) for small shards, HNSW above
    EXACT_UP_TO vectors; IVF-PQ (compressed, for memory-bound shards) is asked for by name."""
    if kind == "auto":
        kind = "flat" if size < EXACT_UP_TO else "hnsw"
    if kind not in ANN_KINDS:
        raise CascadeError(f"unknown ANN kind {kind!r} (choose from auto, {', '.join(ANN_KINDS)})")
    params = dict(params or {})
    defaults = ANN_DEFAULTS.get(kind, {})
    unknown = set(params) - set(defaults)
    if unknown:
        raise CascadeError(f"unknown {kind} parameter(s) {', '.join(sorted(unknown))}"
                           + (f" (choose from {', '.join(defaults)})" if defaults else ": flat has none"))
    spec = {**defaults, **params}
    for name, value in spec.items():
        if not isinstance(value, int) or value < 0:
            raise CascadeError(f"{kind} parameter {name} must be an integer >= 0, got {value!r}")
    if kind == "ivfpq":
        spec["nlist"] = spec["nlist"] or max(1, min(size // 39, int(4 * np.sqrt(max(size, 1)))))
        spec["pq_m"] = spec["pq_m"] or max(m for m in range(1, dim // 8 + 1) if dim % m == 0)
        if dim % spec["pq_m"]:
            raise CascadeError(f"ivfpq pq_m ({spec['pq_m']}) must divide the vector dimension ({dim})")
        spec["refine"] = max(1, spec["refine"])
    return {"kind": kind, **spec}


class DenseIndex:
    """Unit vectors (cosine = inner product) on disk, memory-mapped, plus an optional FAISS ANN index.

    `vectors.npy` is the source of truth: exact search reads it, re-indexing reuses it, IVF-PQ
    re-scores its candidates with it. The ANN index (HNSW or IVF-PQ) only proposes candidates.
    """

    def __init__(self, vectors: np.ndarray, ann: faiss.Index | None, spec: dict):
        self._vectors, self._ann, self.spec = vectors, ann, spec

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, kind: str = "flat", params: dict | None = None) -> "DenseIndex":
        if vectors.dtype != np.float32 or not vectors.flags.c_contiguous:  # a float32 memory map stays one
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        spec = ann_spec(kind, len(vectors), vectors.shape[1], params)
        return cls(vectors, _build_ann(vectors, spec), spec)

    @property
    def size(self) -> int:
        return len(self._vectors)

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def vectors(self) -> np.ndarray:
        return self._vectors

    def exact(self, query_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The true top k by inner product (a full scan; ties broken by lower index)."""
        with one_thread():
            scores = self._vectors @ np.asarray(query_vector, dtype=np.float32).reshape(-1)
        return top_k(scores, k)

    def search(self, query_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._ann is None or k <= 0 or self.size == 0:
            return self.exact(query_vector, k)
        query = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)
        if self.spec["kind"] == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.spec["ef_search"], k))
            scores, idx = self._ann.search(query, min(k, self.size), params=params)
            keep = idx[0] >= 0
            return idx[0][keep].astype(np.int64), scores[0][keep]
        _, idx = self._ann.search(query, min(k * self.spec["refine"], self.size),
                                  params=faiss.SearchParametersIVF(nprobe=self.spec["nprobe"]))
        candidates = np.sort(idx[0][idx[0] >= 0])
        with one_thread():
            refined = self._vectors[candidates] @ query[0]
        best, scores = top_k(refined, k)
        return candidates[best], scores

    def save(self, directory: Path) -> None:
        """Write the vectors, the ANN index and its spec."""
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / VECTORS, self._vectors)
        self.save_ann(directory)

    def save_ann(self, directory: Path) -> None:
        """Write the ANN index and its spec beside vectors already in `directory` (how an index build,
        which encodes straight into `vectors.npy`, finishes a shard)."""
        if self._ann is not None:
            faiss.write_index(self._ann, str(directory / ANN))
        (directory / SPEC).write_text(json.dumps(self.spec), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> "DenseIndex":
        spec = json.loads((directory / SPEC).read_text(encoding="utf-8"))
        vectors = np.load(directory / VECTORS, mmap_mode="r")
        ann = (faiss.read_index(str(directory / ANN), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
               if spec["kind"] != "flat" else None)
        return cls(vectors, ann, spec)



def _build_ann(vectors: np.ndarray, spec: dict) -> faiss.Index | None:
    n, dim = vectors.shape
    if spec["kind"] == "flat" or n == 0:
        return None
    if spec["kind"] == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec["ef_construction"]
    else:
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, min(spec["nlist"], n), spec["pq_m"], spec["nbits"],
                                 faiss.METRIC_INNER_PRODUCT)
        train = vectors if n <= 256 * spec["nlist"] else vectors[np.random.default_rng(0).choice(
            n, 256 * spec["nlist"], replace=False)]
        if len(train) < 2 ** spec["nbits"]:
            raise CascadeError(f"ivfpq needs at least {2 ** spec['nbits']} vectors to train (nbits={spec['nbits']}), "
                               f"this shard has {len(train)}: use --ann flat or hnsw")
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    for start in range(0, n, 65536):  # in blocks, so a memory-mapped matrix is never copied whole
        index.add(np.ascontiguousarray(vectors[start:start + 65536], dtype=np.float32))
    return index
