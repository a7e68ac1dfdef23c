"""What every benchmark script shares: the repo's paths, the machine it ran on, and publishing its results.

One copy instead of a preamble and a "write .json, write .md, splice README" tail per script. Scripts run as
`python benchmarks/X.py`, so `from _common import ...` finds this file beside them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cascade.fileio import atomic_write
from cascade.machine import describe as machine  # noqa: F401  (the benchmarks' record of the machine)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "beir"


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    """A process's resident memory in MB from /proc (VmHWM: its peak); NaN where /proc does not say."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def kind(ce) -> str:
    """What a cross-encoder or bi-encoder computes in, as the tables name it: int8 (OpenVINO), bf16 or fp32."""
    from cascade.models.runtime import precision_of

    return "int8" if ce.backend == "openvino" else precision_of(ce.dtype)


def name_option(parser: argparse.ArgumentParser, default: str) -> None:
    """--name: the results files and README block a run writes, so a run on another kind of CPU (a real Zen 4,
    say) sits beside the first instead of replacing it."""
    parser.add_argument("--name", default=default,
                        help=f"results file and README block (default {default}; {default}-zen4: a run on a real Zen 4)")


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
    """Write RESULTS/name.json and RESULTS/name.md, and splice `table` into the README's `marker` block if given.
    A table whose data records the machine but whose text does not name its CPU gets a line that does: a figure
    means little without the CPU it came from."""
    measured = data.get("machine") if isinstance(data, dict) else None
    if isinstance(measured, dict) and measured.get("cpu") and measured["cpu"] not in table:
        flags = ", ".join(measured.get("flags") or []) or "none of AMX, AVX512-BF16, VNNI, AVX2 found"
        table = f"{table.rstrip()}\n\nMeasured on {measured['cpu']}, {measured.get('cores')} cores ({flags}).\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write(RESULTS / f"{name}.json", json.dumps(data, indent=2) + "\n")
    atomic_write(RESULTS / f"{name}.md", table)
    if marker is not None:
        splice_readme(marker, table)
