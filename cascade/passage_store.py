"""Passages on disk: one JSON line each plus a byte-offset array, read on demand.

Nothing is parsed at load time; `store[i]` reads line i through a memory map, so an index whose
passages do not fit in RAM still serves, and opening a large index costs milliseconds. Each passage's
token ids are stored too (`write_tokens`), so a reranker with the index's tokenizer assembles its pairs
without tokenising passages at query time, as Vespa does.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from cascade.documents import Passage
from cascade.errors import CascadeError

PASSAGES = "passages.jsonl"
OFFSETS = "passages.offsets.npy"
DIGESTS = "passages.digests.npy"
TOKENS, TOKEN_OFFSETS, TOKEN_COUNTS = "passages.tokens.npy", "passages.token_offsets.npy", "passages.token_counts.npy"
STORED_TOKENS = 512  # a passage's first token ids kept: as many as any pair window reads


def write_passages(passages: Iterable[Passage], directory: Path) -> int:
    """Write passages, their byte offsets and content digests into `directory`; returns the count."""
    offsets, digests = [0], []
    with open(directory / PASSAGES, "wb") as fh:
        for p in passages:
            record = {"id": p.id, "doc_id": p.doc_id, "title": p.title, "text": p.text,
                      **({"metadata": p.metadata} if p.metadata else {})}
            line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            fh.write(line)
            offsets.append(offsets[-1] + len(line))
            digests.append(p.digest)
    np.save(directory / OFFSETS, np.asarray(offsets, dtype=np.int64))
    np.save(directory / DIGESTS, np.asarray(digests, dtype="S32"))
    return len(digests)


def write_tokens(store: "PassageStore", tokenizer, directory: Path, block: int = 4096) -> None:
    """Every passage's token ids (no special tokens, its first STORED_TOKENS) and full token count."""
    dtype = np.uint16 if len(tokenizer) <= 1 << 16 else np.int32
    flat, lengths, counts = [np.zeros(0, dtype=dtype)], [], []
    for start in range(0, len(store), block):
        texts = [store[i].content for i in range(start, min(start + block, len(store)))]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        flat.append(np.fromiter((t for one in ids for t in one[:STORED_TOKENS]), dtype=dtype))
        lengths += [min(len(one), STORED_TOKENS) for one in ids]
        counts += [len(one) for one in ids]
    np.save(directory / TOKENS, np.concatenate(flat))
    np.save(directory / TOKEN_OFFSETS, np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64))
    np.save(directory / TOKEN_COUNTS, np.asarray(counts, dtype=np.int64))


class PassageStore(Sequence[Passage]):
    """Read-only passages of one shard, memory-mapped."""

    def __init__(self, directory: Path):
        self.path = directory / PASSAGES
        self._offsets = np.load(directory / OFFSETS, mmap_mode="r")
        self.digests = np.load(directory / DIGESTS, mmap_mode="r")
        size = self.path.stat().st_size
        if int(self._offsets[-1]) != size or len(self.digests) != len(self._offsets) - 1:
            raise CascadeError(f"{self.path} does not match its offsets "
                               f"({size} bytes, offsets say {int(self._offsets[-1])})")
        self._tokens = None
        if (directory / TOKENS).is_file():  # indexes built before tokens were stored have none
            self._tokens = tuple(np.load(directory / name, mmap_mode="r") for name in (TOKENS, TOKEN_OFFSETS, TOKEN_COUNTS))
            if len(self._tokens[1]) != len(self._offsets) or len(self._tokens[2]) != len(self.digests):
                raise CascadeError(f"{directory / TOKENS} does not match the passages beside it")
        self._map = None
        if size:
            with open(self.path, "rb") as fh:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"passage {i} out of range ({len(self)} passages)")
        try:
            o = json.loads(self._map[int(self._offsets[i]): int(self._offsets[i + 1])])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CascadeError(f"index is damaged: {self.path} line {i + 1} is unreadable ({e})") from None
        return Passage(id=o["id"], doc_id=o["doc_id"], text=o["text"], title=o.get("title", ""),
                       metadata=o.get("metadata") or {})

    def __iter__(self) -> Iterator[Passage]:
        return (self[i] for i in range(len(self)))

    def token_ids(self, i: int) -> tuple[list[int], int] | None:
        """(passage i's first token ids, its token count), or None when this shard stored none."""
        if self._tokens is None:
            return None
        flat, offsets, counts = self._tokens
        return flat[int(offsets[i]): int(offsets[i + 1])].tolist(), int(counts[i])


class Concatenated(Sequence[Passage]):
    """Several shards' passages as one sequence, in shard order (global index = shard start + local index)."""

    def __init__(self, parts: Sequence[Sequence[Passage]]):
        self.parts = list(parts)
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"passage {i} out of range ({len(self)} passages)")
        shard, local = self.locate(i)
        return self.parts[shard][local]

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, index within the shard) of global passage `i`."""
        shard = int(np.searchsorted(self.starts, i, side="right")) - 1
        return shard, i - int(self.starts[shard])

    def token_ids(self, i: int) -> tuple[list[int], int] | None:
        shard, local = self.locate(int(i))
        return self.parts[shard].token_ids(local)

    def digests(self) -> list[bytes]:
        """Every passage's content digest, in global order."""
        return [bytes(d) for part in self.parts for d in part.digests]

    def rows_by_digest(self) -> dict[bytes, int]:
        """Content digest -> global index (the last of any duplicates): what a rebuild reuses vectors by."""
        return {d: i for i, d in enumerate(self.digests())}

    def __iter__(self) -> Iterator[Passage]:
        for part in self.parts:
            yield from part


def split_passages(source: Path, targets: Sequence[Path], ends: Sequence[int]) -> None:
    """Cut one passage folder into consecutive folders ending at passage indices `ends` (a byte copy)."""
    offsets = np.load(source / OFFSETS)
    digests = np.load(source / DIGESTS)
    with open(source / PASSAGES, "rb") as src:
        begin = 0
        for target, end in zip(targets, ends):
            target.mkdir()
            with open(target / PASSAGES, "wb") as dst:
                src.seek(int(offsets[begin]))
                remaining = int(offsets[end] - offsets[begin])
                while remaining:
                    chunk = src.read(min(remaining, 1 << 24))
                    dst.write(chunk)
                    remaining -= len(chunk)
            np.save(target / OFFSETS, offsets[begin:end + 1] - offsets[begin])
            np.save(target / DIGESTS, digests[begin:end])
            begin = end
