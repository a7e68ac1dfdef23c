"""The on-disk index: passages, BM25, dense vectors and a manifest, replaced atomically.

Layout: `INDEX_DIR/manifest.json` names one `INDEX_DIR/data-<id>/` folder. A new build writes a
fresh data folder, fsyncs it, then swaps the manifest with `os.replace` — the single atomic step.
A crash at any earlier point leaves the previous manifest pointing at intact data; orphaned
folders are cleaned up by the next successful write.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cascade import __version__
from cascade.documents import Document, Passage, chunk_all
from cascade.errors import CascadeError
from cascade.fileio import atomic_write
from cascade.rerank.late_interaction import TokenEncoder, TokenStore
from cascade.retrieve import BM25, DenseIndex, Encoder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PASSAGES = "passages.jsonl"
DENSE = "dense.faiss"
BM25_DIR = "bm25"
LATE_DIR = "late"
DEFAULTS = {"passage_words": 200, "overlap": 40, "k1": 1.2, "b": 0.75}


@dataclass
class BuildStats:
    documents: int
    passages: int
    encoded: int
    reused: int
    removed: int
    seconds: float


@dataclass
class Index:
    passages: list[Passage]
    bm25: BM25
    dense: DenseIndex
    manifest: dict
    late: TokenStore | None = None  # per-token vectors for late interaction, when built with them

    @classmethod
    def build(cls, docs: Sequence[Document], encoder: Encoder, *, passage_words: int | None = None,
              overlap: int | None = None, k1: float | None = None, b: float | None = None,
              previous: "Index | None" = None, source: str | None = None, progress: bool = False,
              late: TokenEncoder | None = None, late_dtype: str = "int8") -> tuple["Index", BuildStats]:
        """Chunk, embed and index `docs`, reusing `previous`'s vectors for unchanged passages.

        With `late`, every passage's token vectors are stored too (late interaction, `late_dtype` int8/fp16).

        Settings left as None keep the previous index's values, else the defaults.
        """
        start = time.perf_counter()
        old = previous.manifest["settings"] if previous else {}
        given = {"passage_words": passage_words, "overlap": overlap, "k1": k1, "b": b}
        settings = {k: v if v is not None else old.get(k, DEFAULTS[k]) for k, v in given.items()}
        passages = chunk_all(docs, settings["passage_words"], settings["overlap"])
        ids = [p.id for p in passages]
        if len(set(ids)) != len(ids):
            clash = next(i for i in ids if ids.count(i) > 1)
            raise CascadeError(f"passage id {clash!r} occurs twice: a document id collides with a passage id")

        contents = [p.content for p in passages]
        digests = [p.digest for p in passages]
        old_vectors = (previous.dense.vectors() if previous is not None
                       and previous.manifest["encoder"]["model"] == encoder.model_id else None)
        reusable = {p.digest: old_vectors[i] for i, p in enumerate(previous.passages)} if old_vectors is not None else {}
        fresh = _encode_new(digests, reusable, lambda todo: encoder.encode([contents[i] for i in todo], progress=progress))
        vectors = np.stack(fresh) if fresh else np.zeros((0, encoder.dim), dtype=np.float32)
        encoded = sum(d not in reusable for d in digests)
        late_store, late_info = None, None
        if late is not None:
            old_late = previous.late if previous is not None and (previous.manifest.get("late_interaction") or {}).get(
                "model") == late.model_id else None
            reusable_late = {p.digest: old_late.get(i) for i, p in enumerate(previous.passages)} if old_late else {}
            arrays = _encode_new(digests, reusable_late,
                                 lambda todo: late.encode([contents[i] for i in todo], progress=progress,
                                                          dtype=np.float16))
            late_store = TokenStore.from_arrays(arrays, late.dim, late_dtype)
            late_info = {"model": late.model_id, "dim": late.dim, "dtype": late_dtype,
                         "max_length": late.doc_max_length, "tokens": int(late_store.offsets[-1]),
                         "bytes": late_store.nbytes,
                         "bytes_per_passage": round(late_store.nbytes / max(1, len(passages)))}
        bm25 = BM25.build([p.content for p in passages], k1=settings["k1"], b=settings["b"])
        removed = len({p.digest for p in previous.passages} - set(digests)) if previous is not None else 0

        manifest = {
            "format_version": FORMAT_VERSION,
            "cascade_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": source,
            "settings": settings,
            "encoder": {"model": encoder.model_id, "dim": encoder.dim, "max_length": encoder.max_length,
                        "pooling": encoder.pooling},
            "bm25": {**bm25.params, "stemmer": "english", "stopwords": "en"},
            "counts": {"documents": len({p.doc_id for p in passages}), "passages": len(passages)},
            **({"late_interaction": late_info} if late_info else {}),
        }
        stats = BuildStats(documents=manifest["counts"]["documents"], passages=len(passages), encoded=encoded,
                           reused=len(passages) - encoded, removed=removed, seconds=time.perf_counter() - start)
        return cls(passages, bm25, DenseIndex.from_vectors(vectors), manifest, late_store), stats

    def save(self, path: str | Path) -> None:
        """Write atomically: new data folder first, then one `os.replace` of the manifest."""
        root = Path(path)
        _check_writable_target(root)
        root.mkdir(parents=True, exist_ok=True)
        data_name = f"data-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        data = root / data_name
        data.mkdir()
        with open(data / PASSAGES, "w", encoding="utf-8") as fh:
            for p in self.passages:
                fh.write(json.dumps({"id": p.id, "doc_id": p.doc_id, "title": p.title, "text": p.text},
                                    ensure_ascii=False) + "\n")
        self.dense.save(data / DENSE)
        self.bm25.save(data / BM25_DIR)
        if self.late is not None:
            self.late.save(data / LATE_DIR)
        files = {f.relative_to(data).as_posix(): f.stat().st_size for f in sorted(data.rglob("*")) if f.is_file()}
        _fsync_tree(data)
        manifest = {**self.manifest, "data": data_name, "files": files}
        atomic_write(root / MANIFEST, json.dumps(manifest, indent=2))
        _fsync_dir(root)
        self.manifest = manifest
        for stale in root.iterdir():
            if stale.name != data_name and (stale.name.startswith("data-") or stale.name.endswith(".tmp")):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path) -> "Index":
        root = Path(path)
        manifest = read_manifest(root)
        data = root / manifest["data"]
        for name, size in manifest["files"].items():
            f = data / name
            if not f.is_file():
                raise CascadeError(f"index {root} is damaged: missing {f}")
            if f.stat().st_size != size:
                raise CascadeError(f"index {root} is damaged: {f} has {f.stat().st_size} bytes, manifest says {size}")
        passages = [Passage(id=o["id"], doc_id=o["doc_id"], text=o["text"], title=o.get("title", ""))
                    for o in _read_lines(data / PASSAGES)]
        try:
            dense = DenseIndex.load(data / DENSE)
            bm25 = BM25.load(data / BM25_DIR)
            late = TokenStore.load(data / LATE_DIR) if manifest.get("late_interaction") else None
        except Exception as e:  # faiss/bm25s raise assorted types on bad bytes
            raise CascadeError(f"index {root} is damaged: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        expected = manifest["counts"]["passages"]
        sizes = [("passages.jsonl", len(passages)), ("dense index", dense.size), ("BM25 index", bm25.size)]
        for what, n in sizes + ([("late-interaction store", late.size)] if late is not None else []):
            if n != expected:
                raise CascadeError(f"index {root} is inconsistent: manifest says {expected} passages, {what} has {n}")
        if dense.dim != manifest["encoder"]["dim"]:
            raise CascadeError(f"index {root} is inconsistent: manifest says dim {manifest['encoder']['dim']}, "
                               f"dense index has {dense.dim}")
        return cls(passages, bm25, dense, manifest, late)


def _encode_new(digests: Sequence[str], reusable: dict, encode) -> list:
    """One item per digest: reused where `reusable` has it, else from one `encode(indices)` call."""
    todo = [i for i, d in enumerate(digests) if d not in reusable]
    fresh = dict(zip(todo, encode(todo))) if todo else {}
    return [fresh[i] if i in fresh else reusable[d] for i, d in enumerate(digests)]


REQUIRED = {"format_version": int, "data": str, "settings": dict, "encoder": dict, "counts": dict, "files": dict}


def read_manifest(root: Path) -> dict:
    """The validated manifest of the index at `root`, or a one-line error saying what is wrong."""
    if not root.exists():
        raise CascadeError(f"index not found: {root}")
    path = root / MANIFEST
    if not path.is_file():
        raise CascadeError(f"{root} is not a Cascade index (no {MANIFEST}); build one with `cascade index`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CascadeError(f"{path} is corrupted ({e}); rebuild with `cascade index`") from None
    if not isinstance(manifest, dict):
        raise CascadeError(f"{path} is corrupted (not a JSON object); rebuild with `cascade index`")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CascadeError(f"{path}: index format version {version!r} is not supported "
                           f"(this Cascade reads version {FORMAT_VERSION}); rebuild with `cascade index`")
    for key, kind in REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            raise CascadeError(f"{path} is corrupted: field {key!r} is missing or not a {kind.__name__}")
    if not isinstance(manifest["encoder"].get("model"), str) or not isinstance(manifest["encoder"].get("dim"), int):
        raise CascadeError(f"{path} is corrupted: encoder model/dim missing")
    if not isinstance(manifest["counts"].get("passages"), int):
        raise CascadeError(f"{path} is corrupted: passage count missing")
    if "/" in manifest["data"] or manifest["data"].startswith("."):
        raise CascadeError(f"{path} is corrupted: bad data folder name {manifest['data']!r}")
    return manifest


def _check_writable_target(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise CascadeError(f"cannot write index to {root}: it is a file")
    if root.is_dir() and any(root.iterdir()) and not (root / MANIFEST).exists():
        raise CascadeError(f"refusing to write index into {root}: it is not empty and not a Cascade index")


def _read_lines(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CascadeError(f"index is damaged: {path} is unreadable ({e})") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for f in root.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        _fsync_dir(d)
