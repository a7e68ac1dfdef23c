"""Documents in, passages out: loaders for folders, JSONL and BEIR corpora, and chunking.

Long documents are split into overlapping word windows so that every stage (BM25, dense,
cross-encoder) sees a span it can read in full; each passage keeps its parent document id.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from cascade.errors import CascadeError

TEXT_SUFFIXES = (".txt", ".md")


RESERVED = ("id", "_id", "title", "text", "metadata")  # a JSONL record's fields that are not metadata


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""
    metadata: dict = field(default_factory=dict, hash=False)  # kept with every passage, returned with every hit


@dataclass(frozen=True)
class Passage:
    """A span of a document: the unit that is indexed, scored and returned."""

    id: str
    doc_id: str
    text: str
    title: str = ""
    metadata: dict = field(default_factory=dict, hash=False)  # its document's; not read by any model

    @property
    def content(self) -> str:
        """What every model reads: the title, then the text (BEIR's convention)."""
        return f"{self.title} {self.text}".strip() if self.title else self.text

    @property
    def digest(self) -> str:
        """Content hash: unchanged passages keep their embeddings across re-indexing."""
        return hashlib.sha256(self.content.encode("utf-8")).hexdigest()[:32]


def chunk(doc: Document, words: int, overlap: int) -> list[Passage]:
    """Split a document into windows of `words` words overlapping by at least `overlap`.

    `words=0` keeps documents whole. A document that fits in one window keeps its text and its id;
    otherwise passages are `<doc_id>#<k>`: the fewest full-size windows that respect the overlap, spaced
    evenly from the first word to the last (no near-duplicate tail window). No defaults here: an index's
    come from `IndexSettings`.
    """
    if words < 0 or overlap < 0 or (words and overlap >= words):
        raise CascadeError(
            f"invalid chunking: passage words={words}, overlap={overlap} "
            "(need words >= 0 and 0 <= overlap < words)"
        )
    tokens = doc.text.split()
    if words == 0 or len(tokens) <= words:
        return [Passage(id=doc.id, doc_id=doc.id, text=doc.text.strip(), title=doc.title, metadata=doc.metadata)]
    span = len(tokens) - words
    count = math.ceil(span / (words - overlap)) + 1
    starts = [round(k * span / (count - 1)) for k in range(count)]
    return [
        Passage(id=f"{doc.id}#{k}", doc_id=doc.id, text=" ".join(tokens[s : s + words]), title=doc.title,
                metadata=doc.metadata)
        for k, s in enumerate(starts)
    ]


def metadata_of(record: dict) -> dict:
    """A record's `metadata` object (BEIR's field) and every other field besides id, title and text."""
    given = record.get("metadata")
    return {**(given if isinstance(given, dict) else {}), **{k: v for k, v in record.items() if k not in RESERVED}}


def load_documents(src: str | Path) -> list[Document]:
    """Load a folder of .txt/.md files, a .jsonl[.gz] file, or a BEIR dataset folder."""
    return list(iter_documents(src))


def iter_documents(src: str | Path) -> Iterator[Document]:
    """`load_documents`, streamed: documents are read as they are consumed, so a corpus need not fit in RAM."""
    path = Path(src)
    if not path.exists():
        raise CascadeError(f"source not found: {path}")
    if path.is_dir():
        corpus = next((path / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (path / n).is_file()), None)
        docs = _read_jsonl(corpus) if corpus else _read_folder(path)
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        docs = _read_jsonl(path)
    else:
        raise CascadeError(
            f"unsupported source {path}: expected a folder of .txt/.md files, "
            "a .jsonl[.gz] file, or a BEIR folder with corpus.jsonl[.gz]"
        )
    return unique(docs, str(path))


def unique(docs: Iterable[Document], source: str) -> Iterator[Document]:
    """Stream `docs`, refusing a repeated id (passages would be ambiguous) and an empty source."""
    seen: set[str] = set()
    for d in docs:
        if d.id in seen:
            raise CascadeError(f"duplicate document id {d.id!r} in {source}")
        seen.add(d.id)
        yield d
    if not seen:
        raise CascadeError(f"no documents found in {source}")


def _read_folder(root: Path) -> Iterator[Document]:
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise CascadeError(f"{f}: not valid UTF-8 (byte {e.start})") from None
        if text.strip():
            yield Document(id=f.relative_to(root).as_posix(), text=text, title=f.stem)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) pairs; one clear error for bad bytes or bad JSON."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as e:
                    raise CascadeError(f"{path}:{n}: not valid UTF-8 (byte {e.start})") from None
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CascadeError(f"{path}:{n}: invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise CascadeError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
                yield n, obj
    except (OSError, EOFError) as e:
        raise CascadeError(f"{path}: cannot read ({e})") from None


def _read_jsonl(path: Path) -> Iterator[Document]:
    for n, obj in read_jsonl(path):
        doc_id = obj.get("_id", obj.get("id"))
        if doc_id is None or str(doc_id).strip() == "":
            raise CascadeError(f"{path}:{n}: record has no 'id' or '_id'")
        text, title = obj.get("text"), obj.get("title") or ""
        if not isinstance(text, str):
            raise CascadeError(f"{path}:{n}: record {doc_id!r} has no string 'text'")
        if not isinstance(title, str):
            raise CascadeError(f"{path}:{n}: record {doc_id!r} has a non-string 'title'")
        if text.strip() or title.strip():
            yield Document(id=str(doc_id), text=text, title=title, metadata=metadata_of(obj))
