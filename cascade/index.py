"""The on-disk index: sharded passages, BM25 and dense vectors, and a manifest, replaced atomically.

Layout: `INDEX_DIR/manifest.json` names one `INDEX_DIR/data-<id>/` folder holding the global BM25
statistics (`bm25.json`), one `shard-NNN/` folder per shard (passages, BM25 rows, dense vectors and
ANN index) and, optionally, `late/` token vectors. A new build writes a
fresh data folder, fsyncs it, then swaps the manifest with `os.replace` — the single atomic step.
A crash at any earlier point leaves the previous manifest pointing at intact data; orphaned
folders are cleaned up by the next successful write.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from cascade import integrity
from cascade._version import __version__
from cascade.documents import Document, Passage, chunk
from cascade.errors import CascadeError
from cascade.fileio import atomic_write, exclusive, fsync_dir, fsync_tree
from cascade.models.bi_encoder import Encoder
from cascade.models.runtime import tokenizer_fingerprint
from cascade.models.token_encoder import TokenEncoder
from cascade.passage_store import Concatenated, PassageStore, split_passages, write_passages, write_tokens
from cascade.retrieve.bm25 import BM25, Collection, TermCounts
from cascade.retrieve.dense import VECTORS, DenseIndex, ann_spec
from cascade.retrieve.shards import BM25FanOut, DenseFanOut
from cascade.retrieve.tokens import TokenStore
from cascade.runners import LocalRunner, Runner, worker_encoder
from cascade.settings import IndexSettings

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
LOCK = ".cascade-index.lock"  # held while a build writes the index (fileio.exclusive)
RERANKER_CHOICE = "reranker.json"  # written by `cascade adapt`: the reranker this index's searches use by default
COLLECTION = "bm25.json"
BM25_DIR = "bm25"
DENSE_DIR = "dense"
LATE_DIR = "late"
COUNTS_DIR = "counts.tmp"
ENCODE_BLOCK = 4096  # passages encoded and written per step: memory stays flat however big the shard


@dataclass
class BuildStats:
    documents: int
    passages: int
    encoded: int
    reused: int
    removed: int
    seconds: float


@dataclass
class Shard:
    """A contiguous slice of the passages with its own BM25 rows and dense index: the unit of distribution."""

    passages: PassageStore
    bm25: BM25
    dense: DenseIndex


class Index:
    """Shards (each: passages, BM25 scored with global statistics, dense vectors + ANN) and a manifest.

    `passages`, `bm25` and `dense` present the shards as one index: searches fan out and merge, and a
    passage's global index is its shard's start plus its index within the shard.
    """

    def __init__(self, shards: list[Shard], manifest: dict, data: Path, late: TokenStore | None = None, keep=None):
        self.shards, self.manifest, self.data, self.late = shards, manifest, data, late
        self.passages = Concatenated([s.passages for s in shards])
        self.bm25 = BM25FanOut([s.bm25 for s in shards], self.passages.starts)
        self.dense = DenseFanOut([s.dense for s in shards], self.passages.starts)
        self._keep = keep  # a temporary directory that must live as long as this index

    def passage_tokens(self, rows, fingerprint: str | None) -> list[tuple[list[int], int]] | None:
        """The stored (token ids, count) of passages `rows`, if they were tokenised by a tokenizer with this
        `fingerprint` (`tokenizer_fingerprint`); None otherwise, or for an index that stored none."""
        if fingerprint is None or self.manifest.get("encoder", {}).get("tokenizer") != fingerprint:
            return None
        found = [self.passages.token_ids(int(i)) for i in rows]
        return None if any(f is None for f in found) else found

    @classmethod
    def build(cls, docs: Iterable[Document], encoder: Encoder, path: str | Path | None = None, *,
              passage_words: int | None = None, overlap: int | None = None, k1: float | None = None,
              b: float | None = None, shards: int | None = None, ann: str | None = None,
              ann_params: dict | None = None, previous: "Index | None" = None, source: str | None = None,
              progress: bool = False, late: TokenEncoder | None = None, late_dtype: str = "int8",
              runner: Runner | None = None) -> tuple["Index", BuildStats]:
        """Chunk, embed and index `docs` into `path` (a temporary directory if None), reusing `previous`'s
        vectors for unchanged passages, and swap the manifest atomically at the end.

        `docs` is streamed: passages go to disk as they are chunked and are encoded block by block.
        Shard work (term counts, encoding, BM25 rows, ANN) runs through `runner`: in this process by
        default, or on a Ray cluster (cascade/runners.py). With `late`, every passage's token vectors
        are stored too (late interaction, `late_dtype` int8/fp16).

        Settings left as None keep the previous index's values, else the defaults.
        """
        start = time.perf_counter()
        runner = runner or LocalRunner()
        old = previous.manifest["settings"] if previous else {}
        settings = IndexSettings.merged({"passage_words": passage_words, "overlap": overlap, "k1": k1, "b": b,
                                         "shards": shards, "ann": ann, "ann_params": ann_params}, old).to_dict()
        ann_spec(settings["ann"], 0, encoder.dim, settings["ann_params"])  # bad ANN settings fail before any work
        keep = None if path is not None else tempfile.TemporaryDirectory(prefix="cascade-index-")
        root = Path(path) if path is not None else Path(keep.name)
        busy = f"another `cascade index` is writing {root}; try again when it has finished"
        if (root / LOCK).is_file():  # a writer at work explains the folder's state better than the checks below
            with exclusive(root / LOCK, busy):
                pass
        _check_writable_target(root)
        created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        writing = ExitStack()  # one writer at a time: a second run would delete the first's work in progress
        writing.enter_context(exclusive(root / LOCK, busy))
        data = root / f"data-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        data.mkdir()

        try:
            documents, bounds = _stage_passages(docs, settings["passage_words"], settings["overlap"], data,
                                                settings["shards"])
            reuse = previous.data.parent if previous is not None and \
                previous.manifest["encoder"]["model"] == encoder.model_id else None
            shared = encoder if runner.in_process else encoder.settled()  # workers load their own copy
            names = [_shard_name(k) for k in range(len(bounds))]
            counted = runner.map(_count_and_encode, [(data / n, shared, reuse, progress) for n in names])
            collection = Collection.merge([(c["df"], c["passages"], c["tokens"]) for c in counted],
                                          settings["k1"], settings["b"])
            collection.save(data / COLLECTION)
            runner.map(_index_shard, [(data / n, data / COLLECTION, settings["ann"], settings["ann_params"])
                                      for n in names])
            index = cls._open(data, {"shards": [{"dir": n} for n in names]})
            late_info = _build_late(index, previous, late, late_dtype, data, progress) if late is not None else None
            removed = len(set(previous.passages.digests()) - set(index.passages.digests())) if previous else 0
            encoded = sum(c["encoded"] for c in counted)
            manifest = {
                "format_version": FORMAT_VERSION,
                "cascade_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "source": source,
                "settings": settings,
                "encoder": {"model": encoder.model_id, "dim": encoder.dim, "max_length": encoder.max_length,
                            "pooling": encoder.pooling, "tokenizer": tokenizer_fingerprint(encoder.tokenizer)},
                "bm25": {**collection.params, "stemmer": "english", "stopwords": "en"},
                "ann": [s.dense.spec for s in index.shards],
                "counts": {"documents": documents, "passages": bounds[-1]},
                "shards": [{"dir": n, "passages": c["passages"]} for n, c in zip(names, counted)],
                **({"late_interaction": late_info} if late_info else {}),
            }
            _commit(root, data, manifest)
        except BaseException:
            shutil.rmtree(data, ignore_errors=True)  # a failed build leaves the previous index as it was
            if created and not (root / MANIFEST).exists():
                shutil.rmtree(root, ignore_errors=True)  # ... and no empty folder where there was none
            raise
        finally:
            writing.close()
        stats = BuildStats(documents=documents, passages=bounds[-1], encoded=encoded, reused=bounds[-1] - encoded,
                           removed=removed, seconds=time.perf_counter() - start)
        return cls.load(root, keep=keep, verify=False), stats  # its digests were computed from these bytes just now

    @classmethod
    def load(cls, path: str | Path, keep=None, verify: bool | str = "sample") -> "Index":
        """Open an index: arrays are memory-mapped, so this is fast and needs little RAM at any size.
        `verify`: "sample" hashes small files whole and a few blocks of large ones (cascade/integrity.py),
        True every byte, False nothing; sizes and counts are checked always."""
        if verify not in (True, False, "sample"):
            raise CascadeError(f"verify must be True, False or 'sample', got {verify!r}")
        root = Path(path)
        manifest = read_manifest(root)
        data = root / manifest["data"]
        for name, size in manifest["files"].items():
            f = data / name
            if not f.is_file():
                raise CascadeError(f"index {root} is damaged: missing {f}")
            if f.stat().st_size != size:
                raise CascadeError(f"index {root} is damaged: {f} has {f.stat().st_size} bytes, manifest says {size}")
        if verify is True and "sha256" in manifest or verify == "sample":  # indexes without checksums load as before
            integrity.verify(root, manifest, full=verify is True)
        index = cls._open(data, manifest, keep)
        expected = manifest["counts"]["passages"]
        sizes = [("passages", len(index.passages)), ("dense index", index.dense.size), ("BM25 index", index.bm25.size)]
        for what, n in sizes + ([("late-interaction store", index.late.size)] if index.late is not None else []):
            if n != expected:
                raise CascadeError(f"index {root} is inconsistent: manifest says {expected} passages, {what} has {n}")
        if index.dense.dim != manifest["encoder"]["dim"]:
            raise CascadeError(f"index {root} is inconsistent: manifest says dim {manifest['encoder']['dim']}, "
                               f"dense index has {index.dense.dim}")
        return index

    @classmethod
    def _open(cls, data: Path, manifest: dict, keep=None) -> "Index":
        try:
            collection = Collection.load(data / COLLECTION)
            shards = []
            for entry in manifest["shards"]:
                folder = data / entry["dir"]
                passages = PassageStore(folder)
                shards.append(Shard(passages, BM25.load(folder / BM25_DIR, collection, len(passages)),
                                    DenseIndex.load(folder / DENSE_DIR)))
            late = TokenStore.load(data / LATE_DIR) if manifest.get("late_interaction") else None
        except CascadeError:
            raise
        except Exception as e:  # numpy/faiss/json raise assorted types on bad bytes
            raise CascadeError(f"index {data.parent} is damaged: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        return cls(shards, manifest, data, late, keep)


def _shard_name(k: int) -> str:
    return f"shard-{k:03d}"


def _stage_passages(docs: Iterable[Document], words: int, overlap: int, data: Path,
                    shards: int) -> tuple[int, list[int]]:
    """Chunk `docs` as they stream into shard folders of whole documents, about equal in passages.

    Passages are written once to a staging folder, then the shards' files are cut from it at document
    boundaries. Returns (documents, each shard's end as a global passage index)."""
    staging = data / "staging.tmp"
    staging.mkdir()
    doc_ends: list[int] = []
    seen: set[str] = set()

    def passages() -> Iterator[Passage]:
        for doc in docs:
            for p in chunk(doc, words, overlap):
                if p.id in seen:
                    raise CascadeError(f"passage id {p.id!r} occurs twice: a document id collides with a passage id")
                seen.add(p.id)
                yield p
            doc_ends.append(len(seen))

    total = write_passages(passages(), staging)
    if total == 0:
        raise CascadeError("no passages to index")
    shards = min(shards, len(doc_ends))
    ends = sorted({doc_ends[min(int(np.searchsorted(doc_ends, total * (k + 1) / shards)), len(doc_ends) - 1)]
                   for k in range(shards)})
    if shards == 1:
        staging.rename(data / _shard_name(0))
    else:
        split_passages(staging, [data / _shard_name(k) for k in range(len(ends))], ends)
        shutil.rmtree(staging)
    return len(doc_ends), ends


def _count_and_encode(folder: Path, encoder: Encoder | dict, reuse: Path | None, progress: bool) -> dict:
    """Shard step 1: BM25 term counts (kept in the shard until global statistics exist) and dense vectors,
    reused from the previous index by content digest, else encoded block by block into a memory map."""
    encoder = worker_encoder(encoder)
    passages = PassageStore(folder)
    counts = TermCounts.count(p.content for p in passages)
    counts.save(folder / COUNTS_DIR)
    (folder / DENSE_DIR).mkdir()
    vectors = np.lib.format.open_memmap(folder / DENSE_DIR / VECTORS, mode="w+", dtype=np.float32,
                                        shape=(len(passages), encoder.dim))
    old = Index.load(reuse, verify=False) if reuse is not None else None  # checked when the caller loaded it
    where = old.passages.rows_by_digest() if old else {}
    todo = []
    for i, d in enumerate(passages.digests):
        if bytes(d) in where:
            k, j = old.passages.locate(where[bytes(d)])
            vectors[i] = old.shards[k].dense.vectors()[j]
        else:
            todo.append(i)
    bar = tqdm(total=len(todo), desc=f"encoding {folder.name}", unit="psg", disable=not progress or not todo)
    for block in range(0, len(todo), ENCODE_BLOCK):
        rows = todo[block:block + ENCODE_BLOCK]
        vectors[rows] = encoder.encode([passages[i].content for i in rows], on_batch=bar.update)
    bar.close()
    vectors.flush()
    write_tokens(passages, encoder.tokenizer, folder)
    return {"df": counts.document_frequencies(), "passages": len(passages), "tokens": int(counts.lengths.sum()),
            "encoded": len(todo)}


def _index_shard(folder: Path, collection: Path, ann: str, ann_params: dict) -> None:
    """Shard step 2, once global statistics exist: BM25 rows scored with them, and the ANN index."""
    BM25.from_counts(TermCounts.load(folder / COUNTS_DIR), Collection.load(collection)).save(folder / BM25_DIR)
    shutil.rmtree(folder / COUNTS_DIR)
    vectors = np.load(folder / DENSE_DIR / VECTORS, mmap_mode="r")
    DenseIndex.from_vectors(vectors, ann, ann_params).save_ann(folder / DENSE_DIR)


def _build_late(index: Index, previous: "Index | None", late: TokenEncoder, dtype: str, data: Path,
                progress: bool) -> dict:
    """Token vectors for every passage (one store for the whole index), reused by digest where the model matches."""
    info = (previous.manifest.get("late_interaction") or {}) if previous is not None else {}
    old = previous.late if info.get("model") == late.model_id else None
    where = previous.passages.rows_by_digest() if old else {}
    digests = index.passages.digests()
    todo = [i for i, d in enumerate(digests) if d not in where]
    fresh = dict(zip(todo, late.encode([index.passages[i].content for i in todo], progress=progress,
                                       dtype=np.float16))) if todo else {}
    store = TokenStore.from_arrays([fresh[i] if i in fresh else old.get(where[d]) for i, d in enumerate(digests)],
                                   late.dim, dtype)
    store.save(data / LATE_DIR)
    index.late = store
    return {"model": late.model_id, "dim": late.dim, "dtype": dtype, "max_length": late.doc_max_length,
            "tokens": int(store.offsets[-1]), "bytes": store.nbytes,
            "bytes_per_passage": round(store.nbytes / max(1, len(digests)))}


def _commit(root: Path, data: Path, manifest: dict) -> None:
    """The one atomic step: fsync the new data folder, swap the manifest, then clear stale folders."""
    files = {f.relative_to(data).as_posix(): f.stat().st_size for f in sorted(data.rglob("*")) if f.is_file()}
    fsync_tree(data)
    atomic_write(root / MANIFEST, json.dumps({**manifest, "data": data.name, "files": files,
                                              **integrity.digests(data, files)}, indent=2))
    fsync_dir(root)
    for stale in root.iterdir():
        if stale.name != data.name and (stale.name.startswith("data-") or stale.name.endswith(".tmp")):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


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


def verify_checksums(root: Path) -> int:
    """Re-hash every file of the index at `root` against the checksums written when it was built; the bytes
    checked, or an error naming each file whose bytes changed."""
    return integrity.verify(root, read_manifest(root), full=True)


def recorded_reranker(root: Path) -> str | None:
    """The reranker `cascade adapt` recorded for this index: a model folder, "" for none (reranking did not
    pay), or None when nothing is recorded (the usual default applies)."""
    path = root / RERANKER_CHOICE
    if not path.is_file():
        return None
    try:
        choice = json.loads(path.read_text(encoding="utf-8"))["reranker"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CascadeError(f"{path} is corrupted ({type(e).__name__}); delete it or rerun `cascade adapt`") from None
    if choice is not None and not isinstance(choice, str):
        raise CascadeError(f"{path} is corrupted: reranker must be a model path or null")
    return choice or ""


def _check_writable_target(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise CascadeError(f"cannot write index to {root}: it is a file")
    if root.is_dir() and any(p.name != LOCK for p in root.iterdir()) and not (root / MANIFEST).exists():
        raise CascadeError(f"refusing to write index into {root}: it is not empty and not a Cascade index")


def _read_lines(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CascadeError(f"index is damaged: {path} is unreadable ({e})") from None
