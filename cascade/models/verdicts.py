"""What "auto" measured on this machine: a precision per machine, a backend per model, cached once.

The CPU decides what runs fastest (bf16 pays ~3x with AMX and not at all without it, fused graphs pay on
some CPUs and not on others), and a session cannot know which CPU it gets, so choices are timed once
per machine and kept in `~/.cache/cascade/backends.json`, keyed by the CPU, its flags, torch and threads.
`cascade info` lists them and `cascade info --remeasure` forgets them. Timing is the ratio of medians
over interleaved rounds, so a busy moment moves both sides alike.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cascade.fileio import atomic_write, cache_root

Forward = Callable[[dict], torch.Tensor]  # padded features -> one row of output per input row
KEPT = 64  # verdicts cached, the most recent (models loaded from temporary folders would pile up)
PRECISION = "precision"  # the signature the machine's precision verdict is kept under, beside the models'


@dataclass
class Verdict:
    """What "auto" chose for one machine and model+window (a backend), or one machine (a precision), and the
    measurements behind it."""

    choice: str  # "torch", "fused" or "openvino"; "bf16" or "fp32"
    speedup: float | None = None  # eager ms / the choice's ms (fp32 ms / bf16 ms) on the probe batches
    agreement: float | None = None  # Spearman of the choice's vs eager scores on the probe pairs
    why: str = ""
    tried: tuple[str, ...] = ()  # the backends measured against eager (a verdict without one is measured again)


def _ms(forward: Forward, features: dict) -> float:
    start = time.perf_counter()
    forward(features)
    return (time.perf_counter() - start) * 1000


ROUNDS = 9  # timed rounds per probe, after 2 untimed ones; the ratio of medians resists a busy moment


def speedup(plain: Forward, fast: Forward, batches: list[dict], rounds: int = ROUNDS) -> float:
    """How many times faster `fast` runs `batches` than `plain` (median over interleaved rounds, after warm-up
    rounds that also let oneDNN Graph compile each shape)."""
    times: list[tuple[float, float]] = []
    for i in range(rounds + 2):
        pair = (sum(_ms(plain, b) for b in batches), sum(_ms(fast, b) for b in batches))
        if i >= 2:
            times.append(pair)
    plain_ms, fast_ms = np.median(np.array(times), axis=0)
    return float(plain_ms / fast_ms)


MIN_BF16_GAIN = 1.2  # bf16 must be this much faster than fp32 to be chosen: it also costs 8 bits of mantissa


def precision_verdict() -> Verdict:
    """bf16 or fp32 for this CPU's models, measured once per machine (cached) on a MiniLM-sized layer.

    bf16 units do not make bf16 pay by themselves: with AVX512-BF16 but no AMX (ONEDNN_MAX_CPU_ISA=
    AVX512_CORE_BF16 on the AMX machine, `benchmarks/isa_levels.py`) the bi-encoder ran at 0.7x fp32 and the
    teacher no faster in bf16 than AVX2's fp32, while AMX makes bf16 ~3x fp32. So it is timed, not assumed."""
    key = machine_key(PRECISION)
    verdict = cached(key)
    if verdict is None:
        gain = _bf16_gain()
        choice = "bf16" if gain >= MIN_BF16_GAIN else "fp32"
        why = f"bf16 ran {gain:.2f}x fp32 on a MiniLM-sized layer" + ("" if choice == "bf16" else
                                                                       f", under {MIN_BF16_GAIN}x")
        verdict = Verdict(choice, round(gain, 2), why=why)
        remember(key, verdict)
    return verdict


@torch.inference_mode()
def _bf16_gain(rows: int = 32, tokens: int = 128, width: int = 384) -> float:
    """fp32 ms / bf16 ms of one BERT layer (attention, GELU feed-forward, layer norms) on a 30-pair call."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=generator) / i ** 0.5
               for o, i in ((3 * width, width), (width, width), (4 * width, width), (width, 4 * width))]
    x = torch.randn(rows, tokens, width, generator=generator)

    def layer(weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        qkv, out, up, down = weights
        q, k, v = (x @ qkv.T).view(rows, tokens, 3, width // 32, 32).permute(2, 0, 3, 1, 4)
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        x = torch.nn.functional.layer_norm(x + attended @ out.T, (width,))
        return torch.nn.functional.layer_norm(x + torch.nn.functional.gelu(x @ up.T) @ down.T, (width,))

    half = [w.to(torch.bfloat16) for w in weights]
    return speedup(lambda f: layer(weights, f["x"]), lambda f: layer(half, f["x"].to(torch.bfloat16)), [{"x": x}])


def verdicts_path() -> Path:
    return cache_root() / "backends.json"


def machine_key(signature: str) -> str:
    """A verdict holds for one CPU, torch version and model+window+precision (`signature`)."""
    from cascade.machine import cpu_flags, cpu_model

    threads = torch.get_num_threads()
    return f"{cpu_model()} [{' '.join(cpu_flags())}] torch {torch.__version__} {threads} threads: {signature}"


def read_verdicts() -> dict[str, dict]:
    """Every cached verdict (an unreadable cache counts as empty: it is only a cache)."""
    try:
        data = json.loads(verdicts_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(verdicts: dict[str, dict]) -> None:
    atomic_write(verdicts_path(), json.dumps(verdicts, indent=1))


def remember(key: str, verdict: Verdict) -> None:
    verdicts = read_verdicts()
    verdicts.pop(key, None)
    try:
        _write(dict(list(verdicts.items())[-(KEPT - 1):] + [(key, asdict(verdict))]))
    except OSError:  # a read-only home only costs the probe again next time
        pass


def here() -> dict[str, Verdict]:
    """The cached verdicts for this machine, by model signature (PRECISION for the precision's), as
    `cascade info` lists them; entries an older Cascade wrote in another form are left out."""
    prefix = machine_key("")
    found = {key[len(prefix):]: _verdict(v) for key, v in read_verdicts().items() if key.startswith(prefix)}
    return {key: v for key, v in found.items() if v is not None}


def forget() -> int:
    """Drop this machine's verdicts (after measuring on a busy machine, or a driver change), so the next load
    measures again; how many were dropped."""
    prefix = machine_key("")
    verdicts = read_verdicts()
    kept = {key: v for key, v in verdicts.items() if not key.startswith(prefix)}
    if len(kept) < len(verdicts):
        _write(kept)
    return len(verdicts) - len(kept)


def cached(key: str) -> Verdict | None:
    return _verdict(read_verdicts().get(key))


def _verdict(entry: object) -> Verdict | None:
    try:
        return Verdict(**entry) if isinstance(entry, dict) else None
    except TypeError:  # another Cascade's form: measured again
        return None
