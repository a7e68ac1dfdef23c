"""Shared PyTorch plumbing for every transformer we run: device, precision, batching.

Speed comes from three habits: bf16 weights where the hardware runs them faster (CUDA; a CPU with
bf16 units where a one-off measurement says so: `cascade.models.verdicts.precision_verdict`), sorting
inputs by length so batches pad little, and `torch.inference_mode()` so no autograd state is kept.
Results must not depend on how work was batched (a passage gets the same vector in any batch and on
any Ray worker, a pair the same score alone or micro-batched), so what shapes a text's computation
is decided by the text and the model, never by its batch mates:

- its padded length: its own token count rounded up to PAD_MULTIPLE (`padded_groups`). Padded to a
  batch mate's length instead, a bf16 embedding moved by up to 1.4e-3 (attention blocks differently);
- its precision: the model's (`CASCADE_PRECISION`, else the CPU's) for passages and pairs, fp32 for a
  search's query (one short text), never switched by a batch's size as autocast over ~100 tokens was;
- the kernels: the GEMM library picks them by matrix shape and threads (oneDNN splits the reduction
  for some row counts: a 1536 -> 384 bf16 linear gives different rows at 64-320 rows than at 32 or
  384+), so a bf16 call is topped up to MIN_REDUCED_TOKENS rows of tokens (`padded_groups`).

Measured on the 2-core AMX machine by `benchmarks/batch_invariance.py`: bi-encoder vectors identical
alone, in shuffled batches and on one thread; cross-encoder scores within 2.3e-7 of each other. Other
CPUs may pick kernels otherwise, so `tolerance` states the bound that rankings are compared within.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from cascade.errors import CascadeError
from cascade.machine import cpu_flags, isa_cap

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PRECISION_ENV = "CASCADE_PRECISION"  # what "auto" means for every model in the process, e.g. fp32 for bit-stable runs
MIN_REDUCED_TOKENS = 512  # a bf16 model call never runs on fewer padded tokens (see `padded_groups`)
PAD_MULTIPLE = 32  # padded lengths are multiples of this: few distinct shapes, at most 31 wasted tokens per item


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
    """True on CPUs with native bf16 matmuls (AMX or AVX512-BF16), unless an ISA cap (`cascade.machine.isa_cap`)
    keeps oneDNN from using them: where bf16 can pay (with AMX ~3x fp32; without, it may not)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    if isa_cap() and not {"amx_bf16", "avx512_bf16"} & set(cpu_flags()):
        return False
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cpu_has_amx() -> bool:
    """True where AMX tiles run bf16 (unless an ISA cap hides them): there fused bf16 ran as fast as int8."""
    return "amx_bf16" in cpu_flags()


def option(value: str, allowed: Sequence[str], env: str, what: str) -> str:
    """`value` (one of `allowed`), with the environment variable `env` standing in for "auto": how a process
    sets what every model's precision or backend means; a clear error names a bad value and where it came from."""
    if value not in allowed:
        raise CascadeError(f"unknown {what} {value!r} (choose from {', '.join(allowed)})")
    if value == "auto" and os.environ.get(env, "auto") != "auto":
        value = os.environ[env]
        if value not in allowed:
            raise CascadeError(f"{env}={value!r} is not a {what} (choose from {', '.join(allowed)})")
    return value


def requested_precision(precision: str) -> str:
    """The precision asked for, `CASCADE_PRECISION` standing in for "auto"; a clear error for unknown names."""
    return option(precision, PRECISIONS, PRECISION_ENV, "precision")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None to run in fp32."""
    precision = requested_precision(precision)
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        from cascade.models.verdicts import precision_verdict  # it times models: imports torch

        return torch.bfloat16 if cpu_has_fast_bf16() and precision_verdict().choice == "bf16" else None
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


def compute_in(model: torch.nn.Module, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Nothing when `model`'s weights are already in `dtype` (as `load_model` leaves them); else autocast,
    for fp32 weights being trained. Never depends on the batch: a text's precision is the model's."""
    weight = next(model.parameters())
    if dtype is None or weight.dtype == dtype:
        return contextlib.nullcontext()
    return torch.autocast(device_type=weight.device.type, dtype=dtype)


def precision_of(dtype: torch.dtype | None) -> str:
    """The precision name (`PRECISIONS`) that runs at compute dtype `dtype`."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def dtype_name(dtype: torch.dtype | None) -> str:
    """"fp32" for None (no reduced precision), else torch's name without "torch." ("bfloat16")."""
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


def tolerance(dtype: torch.dtype | None) -> float:
    """How far batching may move a score of order 1 (a cosine, a logit) at compute dtype `dtype`.

    A few units in the last place of the compute dtype, accumulated over the layers: 2^-6 for bf16
    (8-bit mantissa), 1e-5 for fp32. Rankings are only meaningful where scores differ by more; the
    tests compare runs this way.
    """
    return 1e-5 if dtype is None or dtype == torch.float32 else 2.0**-6


def padded_length(tokens: int, limit: int | None = None) -> int:
    """An item's padded length: its own, rounded up to PAD_MULTIPLE, never past `limit`."""
    padded = -(-int(tokens) // PAD_MULTIPLE) * PAD_MULTIPLE
    return min(padded, limit) if limit else padded


def padded_groups(tokenizer, features: dict, batch: Sequence[int], device: torch.device, limit: int | None = None,
                  dtype: torch.dtype | None = None) -> Iterator[tuple[np.ndarray, dict]]:
    """(positions in `batch`, padded tensors) per padded length among `batch`'s items, so an item is
    padded to its own `padded_length` whichever items share its batch (see the module docstring).

    In bf16 a call is topped up to MIN_REDUCED_TOKENS with copies of its first row (callers keep the first
    `len(positions)` outputs): below that, kernels for few rows round differently (a lone pair's logit
    moved by 2.8% of its size); the top-up costs 6-15% of a 30-pair rerank (`benchmarks/batch_invariance.py`).
    fp32 needs none (2e-7), which is why queries, one short text each, are encoded in fp32.
    """
    batch = np.asarray(batch)
    lengths = np.array([padded_length(len(features["input_ids"][i]), limit) for i in batch])
    for length in np.unique(lengths)[::-1]:
        positions = np.flatnonzero(lengths == length)
        rows = list(batch[positions])
        if dtype is not None and dtype != torch.float32:
            rows += rows[:1] * max(0, -(-MIN_REDUCED_TOKENS // int(length)) - len(rows))
        padded = tokenizer.pad({k: [features[k][i] for i in rows] for k in features.keys()},
                               padding="max_length", max_length=int(length), return_tensors="pt")
        yield positions, padded.to(device)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Indices grouped into batches of similar length, longest first (fails fast on OOM). A batch never
    spans two padded lengths, so each is one model call (`padded_groups` would split it)."""
    if batch_size < 1:
        raise CascadeError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    padded = np.array([padded_length(n) for n in np.asarray(lengths)[order]])
    for bucket in np.split(order, np.flatnonzero(np.diff(padded)) + 1):
        for start in range(0, len(bucket), batch_size):
            yield bucket[start : start + batch_size]


def load_model(auto_class: str, path: str, name: str, what: str, device: torch.device,
               dtype: torch.dtype | None = None):
    """(tokenizer, model in eval mode on `device`, weights in compute dtype `dtype` or fp32) from a resolved
    path; one clear error if it fails.

    Weights are cast once here rather than run under autocast, which re-casts every weight on every call
    (so it only paid above ~100 tokens a batch, and a text's precision then depended on its batch). A
    sequence-classification head stays fp32, so a logit is not rounded to bf16's 8 bits (ties at 0.03).
    """
    import transformers

    quiet_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = getattr(transformers, auto_class).from_pretrained(path).float().to(device).eval()
    except (OSError, ValueError) as e:
        raise CascadeError(f"could not load {what} {name!r}: {str(e).splitlines()[0]}") from None
    if dtype is not None:
        model.to(dtype)
    if dtype is not None and auto_class == "AutoModelForSequenceClassification":
        for head in (getattr(model.base_model, "pooler", None), getattr(model, "classifier", None)):
            if head is not None:
                head.float().register_forward_pre_hook(_inputs_to_fp32)
    return tokenizer, model


def _inputs_to_fp32(module, args):
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


WEIGHT_FILES = ("*.safetensors", "*.bin")
EDGE = 1 << 20  # bytes read from each end of a weight file


def weights_fingerprint(path: str | Path) -> str:
    """Which weights a model folder holds, hashed: its config and, per weight file, the size and the first and
    last MiB (a retrained model differs throughout; 2 MiB read per file, not the whole file). Part of the
    reranker's signature, so a model retrained into the same folder neither reuses cached scores nor the
    backend verdict measured on its predecessor. "" for what is not a folder (a model held in memory)."""
    folder = Path(path)
    if not folder.is_dir():
        return ""
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for file in sorted({f for pattern in WEIGHT_FILES for f in folder.glob(pattern)}):
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with file.open("rb") as f:
            digest.update(f.read(EDGE))
            f.seek(max(0, size - EDGE))
            digest.update(f.read(EDGE))
    return digest.hexdigest()[:10]


def model_signature(model_id: str, weights: str, max_length: int, dtype: torch.dtype | None) -> str:
    """What a model's outputs depend on besides its input: id, weights (`weights_fingerprint`), window and
    compute dtype. Keys score caches and backend verdicts."""
    return f"{model_id}{f'#{weights}' if weights else ''}@{max_length}:{dtype_name(dtype)}"


def tokenizer_fingerprint(tokenizer) -> str | None:
    """What decides a text's token ids (vocabulary, normalizer, pre-tokenizer), hashed: two tokenizers with
    the same fingerprint give a text the same ids. None without a fast backend (then ids are never shared)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    kept = {key: spec.get(key) for key in ("normalizer", "pre_tokenizer", "model", "added_tokens")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars and advisory warnings; our CLI reports state."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
