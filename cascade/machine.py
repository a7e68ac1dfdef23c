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

# oneDNN (under torch and OpenVINO) uses no instructions above ONEDNN_MAX_CPU_ISA: a cap set to run as a lesser
# CPU would (e.g. AVX2, with ATEN_CPU_CAPABILITY=avx2 for torch's own kernels) hides the flags above it, so
# precision and backend choices are made for the CPU the process behaves as.
ISA_CAP_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
_AVX512 = {"avx2", "avx512f"}
CAP_FLAGS = {
    "SSE41": set(), "AVX": set(), "AVX2": {"avx2"}, "AVX2_VNNI": {"avx2", "avx_vnni"},
    "AVX2_VNNI_2": {"avx2", "avx_vnni"}, "AVX512_CORE": _AVX512, "AVX512_CORE_VNNI": _AVX512 | {"avx512_vnni"},
    "AVX512_CORE_BF16": _AVX512 | {"avx512_vnni", "avx512_bf16"},
    "AVX10_1_512": _AVX512 | {"avx512_vnni", "avx512_bf16"},
}


def _cpuinfo_field(name: str) -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == name), "")


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def isa_cap() -> str | None:
    """The instruction-set cap oneDNN was given (None: no cap, or one above every flag in FLAGS)."""
    cap = next((os.environ[name] for name in ISA_CAP_ENV if os.environ.get(name)), "").strip().upper()
    return cap if cap in CAP_FLAGS else None


def cpu_flags() -> list[str]:
    """The speed-deciding flags this CPU has, less those an ISA cap hides, sorted (empty where /proc/cpuinfo
    cannot be read)."""
    found = set(_cpuinfo_field("flags").split()) & set(FLAGS)
    cap = isa_cap()
    return sorted(found & CAP_FLAGS[cap] if cap else found)


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
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(), "isa_cap": isa_cap(),
            "python": platform.python_version(), **runtime_versions()}
