"""Atomic file writes: a temp file in the same folder, fsync, then `os.replace`.

A crash mid-write leaves the old file (or no file), never a truncated one. The file gets the mode any
new file gets (0666 less the umask), not mkstemp's private 0600: an index built by one account must be
servable by another.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cascade.errors import CascadeError


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; done once, at import
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def exclusive(lock_path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (created if needed) for the block; if another process
    holds it, a CascadeError with `busy` at once instead of two writers undoing each other's work. The
    kernel drops the lock when its holder exits, so a killed writer never leaves it stuck."""
    import fcntl

    with open(lock_path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CascadeError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

