"""First-stage retrieval: lexical (BM25), dense (bi-encoder + FAISS) and their fusion."""

from cascade.retrieve.bm25 import BM25
from cascade.retrieve.dense import DenseIndex, Encoder
from cascade.retrieve.hybrid import FUSIONS, fuse

__all__ = ["BM25", "DenseIndex", "Encoder", "FUSIONS", "fuse"]
