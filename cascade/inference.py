"""Shared PyTorch plumbing for every transformer we run: device, precision, batching.

Speed comes from three habits: bf16 autocast where the hardware has it (AMX/AVX512-BF16 on
CPU, CUDA), sorting inputs by length so each batch pads only to its own longest item, and
`torch.inference_mode()` so no autograd state is kept.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch

from cascade.errors import CascadeError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def pick_device(device: str | None = None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise CascadeError(f"unknown device {device!r} (use 'cpu' or 'cuda')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CascadeError(f"device {device!r} requested but CUDA is not available")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmuls (AMX or AVX512-BF16), where bf16 is ~3x fp32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None to run in fp32."""
    if precision not in PRECISIONS:
        raise CascadeError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if precision == "fp16" and device.type == "cpu":
        raise CascadeError("fp16 is only supported on CUDA; use bf16 or fp32 on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


# Below this many tokens in a batch, autocast's per-op casting costs more than bf16 saves on CPU
# (measured on this 2-core AMX machine: crossover near 100 tokens; a single query is ~20).
CPU_BF16_MIN_TOKENS = 128


def autocast(device: torch.device, dtype: torch.dtype | None, tokens: int) -> contextlib.AbstractContextManager:
    """Autocast for a batch of `tokens` padded tokens, or fp32 where bf16 would not pay."""
    if dtype is None or (device.type == "cpu" and tokens < CPU_BF16_MIN_TOKENS):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Indices grouped into batches of similar length, longest first (fails fast on OOM)."""
    if batch_size < 1:
        raise CascadeError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def load_model(auto_class: str, path: str, name: str, what: str, device: torch.device):
    """(tokenizer, model in eval mode on `device`) from a resolved path; one clear error if it fails."""
    import transformers

    quiet_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        # fp32 master weights even for bf16 checkpoints: autocast picks the compute precision per device
        model = getattr(transformers, auto_class).from_pretrained(path).float().to(device).eval()
    except (OSError, ValueError) as e:
        raise CascadeError(f"could not load {what} {name!r}: {str(e).splitlines()[0]}") from None
    return tokenizer, model


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars and advisory warnings; our CLI reports state."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
