"""Lexical first stage: Okapi BM25 over stemmed, stopword-filtered tokens (bm25s sparse index)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import bm25s
import numpy as np
import Stemmer

from cascade.retrieve.topk import top_k

STOPWORDS = "en"


def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


class BM25:
    """A BM25 index: `search` is one sparse lookup per query term plus a partial sort."""

    def __init__(self, retriever: bm25s.BM25):
        self._retriever = retriever
        self._stemmer = _stemmer()

    @classmethod
    def build(cls, texts: Sequence[str], k1: float = 1.2, b: float = 0.75, progress: bool = False) -> "BM25":
        tokens = bm25s.tokenize(list(texts), stopwords=STOPWORDS, stemmer=_stemmer(), show_progress=progress)
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.index(tokens, show_progress=progress)
        return cls(retriever)

    @property
    def size(self) -> int:
        return int(self._retriever.scores["num_docs"])

    @property
    def params(self) -> dict:
        return {"k1": self._retriever.k1, "b": self._retriever.b, "method": self._retriever.method}

    def tokens(self, query: str) -> list[str]:
        """The query's terms that exist in the index, after the same analysis as the corpus."""
        analysed = bm25s.tokenize([query], stopwords=STOPWORDS, stemmer=self._stemmer, return_ids=False,
                                  show_progress=False)[0]
        vocab = self._retriever.vocab_dict
        return [t for t in analysed if t in vocab]

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Passage indices and BM25 scores of the k best matches; passages with score 0 are left out."""
        terms = self.tokens(query)
        if not terms:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        idx, scores = top_k(np.asarray(self._retriever.get_scores(terms), dtype=np.float32), k)
        keep = scores > 0
        return idx[keep], scores[keep]

    def save(self, directory: Path) -> None:
        self._retriever.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: Path) -> "BM25":
        return cls(bm25s.BM25.load(str(directory), show_progress=False, verbosity=0))
