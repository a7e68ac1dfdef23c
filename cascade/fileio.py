"""Files that stay whole: atomic writes, fsync, one writer at a time, checksums, and noticing in-place changes.

An atomic write is a temp file in the same folder, fsync, then `os.replace`: a crash mid-write leaves the old
file (or no file), never a truncated one. The file gets the mode any new file gets (0666 less the umask), not
mkstemp's private 0600: an index built by one account must be servable by another.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from cascade.errors import CascadeError


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; done once, at import
    os.umask(mask)
    return mask


_MASK = _umask()
FILE_MODE = 0o666 & ~_MASK
DIR_MODE = 0o777 & ~_MASK  # what a new folder gets


def cache_root() -> Path:
    """Cascade's per-user cache (`$XDG_CACHE_HOME/cascade`, else `~/.cache/cascade`): backend verdicts, int8
    exports, evaluation indexes. Everything in it can be rebuilt."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cascade"


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


def usual_modes(folder: str | Path) -> None:
    """Give every file in `folder` the mode a new file gets: transformers' `save_pretrained` writes weights
    through a private (0600) temp file, so a model trained by one account could not be served by another."""
    for path in Path(folder).iterdir():
        if path.is_file():
            path.chmod(FILE_MODE)


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



def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Every file and folder under `root` on disk, so a manifest written next can trust them."""
    for f in root.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        fsync_dir(d)


class Stamps:
    """Size and modification time of the files an index has memory-mapped, read through descriptors held open
    on the very inodes mapped. A file copied over in place (`cp`, `rsync --inplace`) changes them, and reading
    a mapped file truncated underneath kills the process with SIGBUS; a file replaced by rename or removed
    (what `cascade index` does) leaves the mapped inode intact and is not a change. One fstat per file."""

    def __init__(self, folder: Path, names: Iterable[str]):
        self.fds: dict[str, int] = {}
        for name in names:
            try:
                self.fds[name] = os.open(folder / name, os.O_RDONLY)
            except OSError:  # gone already: loading said so, or will
                pass
        self.stamps = {name: self._stamp(fd) for name, fd in self.fds.items()}

    @staticmethod
    def _stamp(fd: int) -> tuple[int, int]:
        st = os.fstat(fd)
        return st.st_size, st.st_mtime_ns

    def changed(self) -> list[str]:
        """The files whose bytes were rewritten in place since they were opened."""
        return [name for name, fd in self.fds.items() if self._stamp(fd) != self.stamps[name]]

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def __del__(self) -> None:
        self.close()
