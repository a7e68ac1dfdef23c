"""What this machine offers for inference: the CPU, its fast-math flags and the runtimes installed.

`cascade info` shows it with the choices Cascade makes from it, and every benchmark records it, because the
CPU differs between machines (AMX, AVX512-BF16/VNNI, AVX2 only) and so does what runs fastest: a figure
means little without the machine it came from. Reads /proc/cpuinfo and package metadata; imports nothing heavy.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# The flags that decide CPU inference speed: bf16 matmuls (AMX, AVX512-BF16), int8 dot products (VNNI,
# AMX-INT8), and the AVX2 floor every x86-64 machine Cascade runs on has.
FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx_vnni", "avx2")
RUNTIMES = ("torch", "transformers", "onnxruntime", "openvino", "faiss-cpu")


def _cpuinfo_field(name: str) -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == name), "")


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The speed-deciding flags this CPU has, sorted (empty where /proc/cpuinfo cannot be read)."""
    return sorted(set(_cpuinfo_field("flags").split()) & set(FLAGS))


def runtime_versions() -> dict[str, str | None]:
    """Installed version of each inference runtime, None where it is not installed (read without importing)."""
    versions: dict[str, str | None] = {}
    for name in RUNTIMES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe() -> dict:
    """CPU model, cores, flags, Python and runtime versions: what a benchmark records beside its figures."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(), "python": platform.python_version(),
            **runtime_versions()}
