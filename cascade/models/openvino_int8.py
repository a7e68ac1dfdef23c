"""The int8 backend: a model converted to OpenVINO and quantised statically by NNCF on real text, for CPUs
without AMX (`pip install 'cascade-retrieval[openvino]'`).

sentence-transformers' CPU study of cross-encoder backends found OpenVINO int8 3.08x torch fp32; measured here
on the bundled student (30 pairs, p50 ms, `benchmarks/isa_levels.py` has the full tables):
- AMX CPU (256 tokens): torch fp32 389, OpenVINO int8 106, but torch bf16 fused 58. So on AMX "auto" tries
  int8 only for a model that runs in fp32 (`cascade.models.verdicts.precision_verdict`).
- a real AMD Zen 4 (AVX512-BF16 and VNNI, no AMX; 128 tokens): torch fp32 296, bf16 162, int8 100. bf16 pays
  there, and int8 more, so without AMX "auto" times int8 whatever the precision.
- capped to AVX2 (no VNNI, so int8 has no fast dot product): torch fp32 579, int8 664: "auto" measures it.

Exports are cached under `~/.cache/cascade/openvino/` by model signature (weights, window, precision), so
the one-off conversion and calibration (seconds for MiniLM) is paid once per machine and model. The graph
runs with an fp32 precision hint: only the quantised matmuls are int8, and a score does not depend on
whether the CPU happens to have bf16 units.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch

from cascade.errors import CascadeError
from cascade.fileio import DIR_MODE, FILE_MODE, cache_root

INSTALL = "pip install 'cascade-retrieval[openvino]'"
KEPT = 8  # exported models kept, the most recently used (models loaded from temporary folders would pile up)


def installed() -> bool:
    """OpenVINO and NNCF are importable (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def _modules():
    if not installed():
        raise CascadeError(f"the openvino backend needs OpenVINO and NNCF: {INSTALL}")
    import nncf
    import openvino

    nncf.set_log_level(logging.ERROR)  # its notes: our CLI reports state
    return openvino, nncf


def exports_dir() -> Path:
    return cache_root() / "openvino"


class Compiled:
    """An OpenVINO CPU model with a torch face: padded features in (the `keys` tensors), one output tensor out."""

    def __init__(self, compiled, keys: Sequence[str]):
        self.compiled, self.keys = compiled, tuple(keys)

    def __call__(self, features: dict) -> torch.Tensor:
        out = self.compiled([features[k].cpu().numpy() for k in self.keys])[0]
        return torch.from_numpy(out.copy())


def int8(module: torch.nn.Module, keys: Sequence[str], example: dict, calibration: Callable[[], list[dict]],
         signature: str) -> Compiled:
    """`module` (fp32; positional `keys` tensors in, one tensor out) as OpenVINO int8, quantised on the
    `calibration()` batches (made only when exporting); converted once per `signature` and cached on disk
    (written whole, then renamed)."""
    ov, nncf = _modules()
    folder = exports_dir() / hashlib.sha256(signature.encode()).hexdigest()[:16]
    if not (folder / "model.xml").is_file():
        _export(ov, nncf, module, keys, example, calibration, folder)
    os.utime(folder)  # most recently used: what pruning keeps
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    try:
        compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", config)
    except RuntimeError as e:
        raise CascadeError(f"OpenVINO could not compile {folder / 'model.xml'}: {str(e).splitlines()[0]}") from None
    return Compiled(compiled, keys)


def _export(ov, nncf, module, keys, example, calibration, folder: Path) -> None:
    arrays = [[batch[k].cpu().numpy() for k in keys] for batch in calibration()]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape checks that hold
            model = ov.convert_model(module.eval(), example_input=tuple(example[k].cpu() for k in keys))
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars: our CLI reports state
            quantised = nncf.quantize(model, nncf.Dataset(arrays), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(arrays))
    except Exception as e:  # conversion fails in many model-specific ways; eager stays available
        raise CascadeError(f"the openvino backend could not convert this model: {str(e).splitlines()[0]}") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        ov.save_model(quantised, str(tmp / "model.xml"), compress_to_fp16=False)
        tmp.chmod(DIR_MODE)  # mkdtemp's is private: an export made by one account serves another
        for file in tmp.iterdir():
            file.chmod(FILE_MODE)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "model.xml").is_file():  # another process exporting the same model won the rename
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(folder.parent)


def _prune(root: Path) -> None:
    exports = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in exports[KEPT:]:
        shutil.rmtree(old, ignore_errors=True)
