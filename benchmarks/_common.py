"""What every benchmark script shares: the repo's paths, the machine it ran on, and publishing its results.

One copy instead of a preamble and a "write .json, write .md, splice README" tail per script. Scripts run as
`python benchmarks/X.py`, so `from _common import ...` finds this file beside them.
"""

from __future__ import annotations

import importlib
import json
import platform
from pathlib import Path
from typing import Any

from cascade.fileio import atomic_write

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "beir"


def cpu_flags() -> list[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags.split() if f.startswith(("amx", "avx512_bf16", "avx512_vnni", "avx2")))


def machine() -> dict[str, Any]:
    """The CPU model and its fast-math flags, the Python version, and the inference runtimes' versions
    (None where one is not installed)."""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        cpu = ""
    versions: dict[str, str | None] = {}
    for runtime in ("torch", "onnxruntime", "openvino"):
        try:
            versions[runtime] = getattr(importlib.import_module(runtime), "__version__", None)
        except ImportError:
            versions[runtime] = None
    return {"cpu": cpu or platform.processor() or platform.machine(), "flags": cpu_flags(),
            "python": platform.python_version(), **versions}


def splice_readme(marker: str, table: str) -> None:
    """Replace the README block between <!-- MARKER:start --> and <!-- MARKER:end --> with `table`."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    atomic_write(readme, f"{head}{start}\n{table}{end}{rest.split(end, 1)[1]}")


def publish(name: str, data: Any, table: str, marker: str | None = None) -> None:
    """Write RESULTS/name.json and RESULTS/name.md, and splice `table` into the README's `marker` block if given."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write(RESULTS / f"{name}.json", json.dumps(data, indent=2) + "\n")
    atomic_write(RESULTS / f"{name}.md", table)
    if marker is not None:
        splice_readme(marker, table)
