"""Atomic writes leave normal permissions: another account can read what one account wrote."""

import os
import stat

from cascade.fileio import atomic_write


def test_atomic_write_replaces_the_file_with_the_mode_new_files_get(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    path = atomic_write(tmp_path / "sub" / "manifest.json", "{}")
    assert path.read_text() == "{}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    atomic_write(path, b"[1]")
    assert path.read_bytes() == b"[1]" and [p.name for p in path.parent.iterdir()] == ["manifest.json"]
