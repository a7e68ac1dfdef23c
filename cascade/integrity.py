"""Checksums of an index's files: written once at build, checked in full (`cascade verify`, a server's start)
or by sample on every load.

Why both: a same-size change (a NaN vector, an edited passage, a bad copy) passes every size and count check
and gives wrong answers with exit 0; only the bytes tell. Hashing every byte costs about a second per GB, too
much for each `cascade search` on a large index, so each load hashes small files whole and, of a large file,
its first and last 1 MiB block and a few random ones, against per-block digests kept in the manifest. Damage
spread over a file (a truncated copy, a zeroed range) is caught at load; one flipped byte in a large file may
need the full check.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Iterable

from cascade.errors import CascadeError

BLOCK = 1 << 20
WHOLE_BELOW = 8 * BLOCK  # files up to this size are hashed whole on every load (~10 ms each)
SAMPLED_BLOCKS = 8  # blocks hashed per larger file on every load: first, last, and random ones
SHORT = 16  # hex digits kept of each block's SHA-256: 64 bits tell damage apart, the manifest stays small


def digests(folder: Path, names: Iterable[str]) -> dict[str, dict]:
    """{"sha256": whole-file digest per name, "blocks": per-block short digests per name}, in one read."""
    whole, blocks = {}, {}
    for name in names:
        digest, parts = hashlib.sha256(), []
        with open(folder / name, "rb") as fh:
            while chunk := fh.read(BLOCK):
                digest.update(chunk)
                parts.append(hashlib.sha256(chunk).hexdigest()[:SHORT])
        whole[name], blocks[name] = digest.hexdigest(), parts
    return {"sha256": whole, "blocks": blocks}


def sampled(n_blocks: int, rng: random.Random) -> list[int]:
    """Which blocks a load hashes: all of a small file; of a large one the first, the last and random others."""
    if n_blocks * BLOCK <= WHOLE_BELOW or n_blocks <= SAMPLED_BLOCKS:
        return list(range(n_blocks))
    return sorted({0, n_blocks - 1, *rng.sample(range(1, n_blocks - 1), SAMPLED_BLOCKS - 2)})


def changed_blocks(path: Path, expected: list[str], which: list[int]) -> bool:
    with open(path, "rb") as fh:
        for k in which:
            fh.seek(k * BLOCK)
            if hashlib.sha256(fh.read(BLOCK)).hexdigest()[:SHORT] != expected[k]:
                return True
    return False


def changed_whole(path: Path, expected: str) -> bool:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest() != expected


def verify(root: Path, manifest: dict, full: bool) -> int:
    """Check the index at `root` against its manifest's digests: every byte (`full`) or a sample (indexes from
    before block digests: skipped). Returns the bytes checked; raises naming each file whose bytes changed."""
    data, files = root / manifest["data"], manifest["files"]
    whole, blocks = manifest.get("sha256"), manifest.get("blocks")
    if full and (not isinstance(whole, dict) or set(whole) != set(files)):
        raise CascadeError(f"index {root} has no checksums (built before Cascade wrote them); rebuild it with "
                           "`cascade index` to be able to verify it")
    if not full and (not isinstance(blocks, dict) or set(blocks) != set(files)):
        return 0
    missing = [name for name in files if not (data / name).is_file()]
    if missing:
        raise CascadeError(f"index {root} is damaged: missing {', '.join(missing)}")
    rng, checked, damaged = random.Random(), 0, []
    for name, size in files.items():
        if full:
            bad, checked = changed_whole(data / name, whole[name]), checked + size
        else:
            which = sampled(len(blocks[name]), rng)
            bad = changed_blocks(data / name, blocks[name], which)
            checked += min(size, len(which) * BLOCK)
        if bad:
            damaged.append(name)
    if damaged:
        how = "checksum mismatch" if full else "checksum mismatch in a sampled block"
        raise CascadeError(f"index {root} is damaged: {', '.join(damaged)} changed since it was built ({how}); "
                           "delete the index and rebuild it with `cascade index`")
    return checked
