"""Lexical first stage: Okapi BM25 (Lucene variant) over stemmed, stopword-filtered terms.

The index is a term-major sparse matrix of precomputed scores (as in bm25s): a query sums its
terms' rows and partially sorts. Scores depend on collection statistics (document frequencies,
passage count, mean length), which live apart in `Collection`: every shard of a sharded index
scores with the global statistics, so sharded results equal unsharded ones exactly.
Arrays are `.npy` files, memory-mapped on load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

from cascade.errors import CascadeError
from cascade.fileio import atomic_write
from cascade.retrieve.topk import top_k

WORD = re.compile(r"(?u)\b\w\w+\b")
STOPWORDS = frozenset(STOPWORDS_EN)


class Analyzer:
    """Text -> terms: lowercase words of 2+ characters, English stopwords dropped, Snowball-stemmed
    (the analysis bm25s and Pyserini's English analyzer do). Stems are cached per word."""

    def __init__(self):
        self._stemmer = Stemmer.Stemmer("english")
        self._stems: dict[str, str] = {}

    def __call__(self, text: str) -> list[str]:
        words = [w for w in WORD.findall(text.lower()) if w not in STOPWORDS]
        new = list({w for w in words if w not in self._stems})
        if new:
            self._stems.update(zip(new, self._stemmer.stemWords(new)))
        return [self._stems[w] for w in words]


@dataclass
class TermCounts:
    """One shard's analysed passages: its postings with local term ids, before global statistics exist."""

    terms: list[str]  # local vocabulary
    term: np.ndarray  # int32 local term id per posting
    passage: np.ndarray  # int32 passage (within the shard) per posting
    tf: np.ndarray  # float32 term frequency per posting
    lengths: np.ndarray  # int32 terms per passage

    @classmethod
    def count(cls, texts: Iterable[str], analyzer: Analyzer | None = None) -> "TermCounts":
        analyse = analyzer or Analyzer()
        vocab: dict[str, int] = {}
        term, passage, tf, lengths = [], [], [], []
        for n, text in enumerate(texts):
            ids = np.fromiter((vocab.setdefault(t, len(vocab)) for t in analyse(text)), dtype=np.int32)
            uniq, counts = np.unique(ids, return_counts=True)
            term.append(uniq)
            tf.append(counts.astype(np.float32))
            passage.append(np.full(len(uniq), n, dtype=np.int32))
            lengths.append(len(ids))
        return cls(list(vocab), _concat(term, np.int32), _concat(passage, np.int32), _concat(tf, np.float32),
                   np.asarray(lengths, dtype=np.int32))

    def document_frequencies(self) -> dict[str, int]:
        return dict(zip(self.terms, np.bincount(self.term, minlength=len(self.terms)).tolist()))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / "terms.json", json.dumps(self.terms, ensure_ascii=False))
        for name in ("term", "passage", "tf", "lengths"):
            np.save(directory / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, directory: Path) -> "TermCounts":
        arrays = {name: np.load(directory / f"{name}.npy") for name in ("term", "passage", "tf", "lengths")}
        return cls(json.loads((directory / "terms.json").read_text(encoding="utf-8")), **arrays)


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


@dataclass
class Collection:
    """Global BM25 statistics: the vocabulary with document frequencies, passage count, total terms."""

    terms: dict[str, int]  # term -> global id
    df: np.ndarray  # int64 per global id
    passages: int
    tokens: int
    k1: float = 1.2
    b: float = 0.75

    @classmethod
    def merge(cls, parts: Sequence[tuple[dict[str, int], int, int]], k1: float = 1.2, b: float = 0.75) -> "Collection":
        """Combine per-shard (document frequencies, passages, terms) into the collection's statistics."""
        if k1 < 0 or not 0 <= b <= 1:
            raise CascadeError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        df: dict[str, int] = {}
        for freqs, _, _ in parts:
            for term, n in freqs.items():
                df[term] = df.get(term, 0) + n
        return cls({t: i for i, t in enumerate(df)}, np.fromiter(df.values(), dtype=np.int64, count=len(df)),
                   sum(p[1] for p in parts), sum(p[2] for p in parts), k1, b)

    @property
    def params(self) -> dict:
        return {"k1": self.k1, "b": self.b, "method": "lucene"}

    def idf(self) -> np.ndarray:
        """Lucene's idf: ln(1 + (N - df + 0.5) / (df + 0.5)), never negative."""
        return np.log1p((self.passages - self.df + 0.5) / (self.df + 0.5)).astype(np.float32)

    def query_terms(self, query: str, analyzer: Analyzer) -> np.ndarray:
        """Global ids of the query's terms that occur in the collection (repeats kept: they count twice)."""
        return np.asarray([self.terms[t] for t in analyzer(query) if t in self.terms], dtype=np.int64)

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps({"k1": self.k1, "b": self.b, "passages": self.passages, "tokens": self.tokens,
                                       "terms": list(self.terms), "df": self.df.tolist()}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "Collection":
        o = json.loads(path.read_text(encoding="utf-8"))
        return cls({t: i for i, t in enumerate(o["terms"])}, np.asarray(o["df"], dtype=np.int64), o["passages"],
                   o["tokens"], o["k1"], o["b"])


class BM25:
    """One shard's BM25 scores: for term t, passages `passage[indptr[t]:indptr[t+1]]` score `score[...]`."""

    def __init__(self, collection: Collection, indptr: np.ndarray, passage: np.ndarray, score: np.ndarray, size: int):
        self.collection = collection
        self._indptr, self._passage, self._score = indptr, passage, score
        self._size = size
        self._analyzer = Analyzer()

    @classmethod
    def build(cls, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> "BM25":
        """A single-shard index whose collection is `texts` itself."""
        counts = TermCounts.count(texts)
        collection = Collection.merge([(counts.document_frequencies(), len(counts.lengths),
                                        int(counts.lengths.sum()))], k1, b)
        return cls.from_counts(counts, collection)

    @classmethod
    def from_counts(cls, counts: TermCounts, collection: Collection) -> "BM25":
        """Score a shard's postings with the collection's statistics."""
        ids = np.asarray([collection.terms[t] for t in counts.terms], dtype=np.int64)
        term = ids[counts.term] if len(counts.term) else np.zeros(0, dtype=np.int64)
        k1, b = collection.k1, collection.b
        mean_length = collection.tokens / max(1, collection.passages)
        norm = k1 * (1 - b + b * counts.lengths[counts.passage] / max(mean_length, 1e-9))
        score = collection.idf()[term] * counts.tf * (k1 + 1) / (counts.tf + norm)
        order = np.argsort(term, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(term, minlength=len(collection.terms)))]).astype(np.int64)
        return cls(collection, indptr, counts.passage[order], score[order].astype(np.float32), len(counts.lengths))

    @property
    def size(self) -> int:
        return self._size

    @property
    def params(self) -> dict:
        return self.collection.params

    def terms(self, query: str) -> np.ndarray:
        """The query's global term ids, after the same analysis as the corpus: shards share them, so a
        fan-out analyses a query once."""
        return self.collection.query_terms(query, self._analyzer)

    def scores(self, query: str | np.ndarray) -> np.ndarray:
        """The BM25 score of every passage in this shard for `query` (text, or its `terms`; 0 where none match)."""
        terms = query if isinstance(query, np.ndarray) else self.terms(query)
        if not len(terms):
            return np.zeros(self._size, dtype=np.float32)
        spans = [slice(self._indptr[t], self._indptr[t + 1]) for t in terms]
        passages = np.concatenate([self._passage[s] for s in spans])
        return np.bincount(passages, weights=np.concatenate([self._score[s] for s in spans]),
                           minlength=self._size).astype(np.float32)

    def search(self, query: str | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Passage indices and BM25 scores of the k best matches; passages with score 0 are left out."""
        idx, scores = top_k(self.scores(query), k)
        keep = scores > 0
        return idx[keep], scores[keep]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("indptr", "passage", "score"):
            np.save(directory / f"{name}.npy", getattr(self, f"_{name}"))

    @classmethod
    def load(cls, directory: Path, collection: Collection, size: int) -> "BM25":
        arrays = [np.load(directory / f"{name}.npy", mmap_mode="r") for name in ("indptr", "passage", "score")]
        return cls(collection, *arrays, size)
