"""How a loaded model runs on this machine: eager PyTorch, or traced once and fused by oneDNN Graph (the
cross-encoder's pairs and the bi-encoder's passages; a search's query always runs eager in fp32).

Eager bf16 on the 2-core AMX CPU spends 35% of a 30-pair rerank in matmuls, 24% in attention, 20% in GELU
and 10% in copies (torch.profiler): element-wise work and memory traffic, not arithmetic. Tracing the model
once (`torch.jit.trace`, 0.3 s) and letting oneDNN Graph fuse it cuts that: on real SciFact candidates at
128 tokens, 30 pairs in one call 109.6 -> 74.4 ms p50 (1.47x), in batches of 8 113.0 -> 88.0 ms, ranked
as eager ranks them (Spearman 0.9995, logits within 0.14: bf16 rounding in another order). The alternatives,
measured on the same machine: torch.compile (inductor, frozen weights; what torch now recommends over
TorchScript) was as fast but compiles 7-9 s for every new input shape and needs a C++ compiler at run
time; `optimize_for_inference` was slower than eager at 30 pairs; ONNX Runtime and OpenVINO did not beat
torch bf16 (benchmarks/cpu_backends.py).

Which is faster depends on the CPU (bf16 units, AVX2 only) and the model, so "auto" measures once per
machine, model and window: fused wins where it is at least `MIN_GAIN` faster on a full-window batch and
ranks real pairs as eager does (Spearman >= `MIN_AGREEMENT`). The verdict is cached in
`~/.cache/cascade/backends.json` (`cascade info` lists it); `CASCADE_BACKEND` forces one for the process.
Fused logits differ from eager ones by bf16 rounding in another order, so the backend is part of a
reranker's cache signature; alone, batched or on one thread, a fused pair scores exactly the same
(benchmarks/batch_invariance.py).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cascade.errors import CascadeError
from cascade.models.runtime import option

BACKENDS = ("auto", "torch", "fused")
BACKEND_ENV = "CASCADE_BACKEND"  # what "auto" means for every model in the process
MIN_GAIN = 1.1  # fused must be this much faster than eager to be chosen
MIN_AGREEMENT = 0.99  # ... and rank the probe pairs this much like eager (Spearman)
KEPT = 64  # verdicts cached, the most recent (models loaded from temporary folders would pile up)

Forward = Callable[[dict], torch.Tensor]  # padded features -> one row of output per input row


@dataclass
class Verdict:
    """What "auto" chose for one machine, model and window, and the measurements behind it."""

    backend: str
    speedup: float | None = None  # eager ms / fused ms on the probe batch
    agreement: float | None = None  # Spearman of fused vs eager scores on the probe pairs
    why: str = ""


def requested(backend: str) -> str:
    """The backend asked for, `CASCADE_BACKEND` standing in for "auto"; a clear error for unknown names."""
    return option(backend, BACKENDS, BACKEND_ENV, "backend")


def eager(model: torch.nn.Module, output: str = "logits") -> Forward:
    """The model as it is; `output` names the field kept (a cross-encoder's logits, an encoder's
    last_hidden_state)."""
    return lambda features: getattr(model(**features), output)


class _Positional(torch.nn.Module):
    """The model with its inputs as positional tensors and one output tensor: what tracing needs."""

    def __init__(self, model: torch.nn.Module, keys: tuple[str, ...], output: str):
        super().__init__()
        self.model, self.keys, self.output = model, keys, output

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(**dict(zip(self.keys, tensors))), self.output)


ROW_STEP = 8  # a fused call's rows are rounded up to a multiple of this ...
MAX_ROWS = 32  # ... and a bigger call runs in chunks of this many: few shapes, each with its own fused graph
SHAPES = 512  # graphs kept per model (oneDNN Graph's default, 12, would send later shapes back to eager)


class Fused:
    """A traced, frozen model that oneDNN Graph fuses, one graph per input shape.

    TorchScript runs a new shape once unfused (to profile it) and fuses from the second call, so a pair's
    score would depend on whether its shape had been seen before. Each new shape is therefore run twice and
    the fused result kept, and shapes are few: rows padded up to a multiple of ROW_STEP, at most MAX_ROWS a
    call (lengths are already multiples of 32: `cascade.models.runtime`).
    """

    def __init__(self, graph: torch.jit.ScriptModule, keys: tuple[str, ...]):
        self.graph, self.keys, self.seen = graph, keys, set()

    def __call__(self, features: dict) -> torch.Tensor:
        rows = len(features[self.keys[0]])
        return torch.cat([self._run({k: v[start : start + MAX_ROWS] for k, v in features.items()})
                          for start in range(0, rows, MAX_ROWS)])

    def _run(self, features: dict) -> torch.Tensor:
        rows = len(features[self.keys[0]])
        extra = -rows % ROW_STEP
        tensors = [torch.cat([features[k], features[k][:1].expand(extra, -1)]) if extra else features[k]
                   for k in self.keys]
        shape = tuple(tensors[0].shape)
        if shape not in self.seen:
            self.graph(*tensors)
            self.seen.add(shape)
        return self.graph(*tensors)[:rows]


def fused(model: torch.nn.Module, example: dict, output: str = "logits") -> Fused:
    """The model traced on `example` (padded features with some padding, so no mask path is traced away),
    frozen, and run through oneDNN Graph's fusion. A model that cannot be traced raises CascadeError."""
    keys = tuple(example.keys())
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation, tracer notes on shape checks that hold
            torch.jit.enable_onednn_fusion(True)  # process-wide, but only TorchScript graphs read them
            torch.jit.set_fusion_strategy([("STATIC", SHAPES)])
            traced = torch.jit.trace(_Positional(model, keys, output).eval(), tuple(example[k] for k in keys),
                                     check_trace=False, strict=False)
            graph = torch.jit.freeze(traced)
    except Exception as e:  # tracing fails in many model-specific ways; eager stays available
        raise CascadeError(f"the fused backend could not trace this model: {str(e).splitlines()[0]}") from None
    return Fused(graph, keys)


def _ms(forward: Forward, features: dict) -> float:
    start = time.perf_counter()
    forward(features)
    return (time.perf_counter() - start) * 1000


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@torch.inference_mode()
def probe(plain: Forward, fast: Forward, timing: dict, pairs: list[dict], reps: int = 5) -> Verdict:
    """Time both on `timing` (interleaved, after warm-up calls that also let oneDNN Graph compile) and compare
    their scores on `pairs` (batches of real text)."""
    for _ in range(3):
        plain(timing)
        fast(timing)
    plain_ms = fused_ms = 0.0
    for _ in range(reps):
        plain_ms += _ms(plain, timing)
        fused_ms += _ms(fast, timing)
    speedup = plain_ms / fused_ms
    a = np.concatenate([plain(f).float().reshape(-1).numpy() for f in pairs])
    b = np.concatenate([fast(f).float().reshape(-1).numpy() for f in pairs])
    agreement = _spearman(a, b) if len(a) > 1 else 1.0
    if agreement < MIN_AGREEMENT:
        return Verdict("torch", round(speedup, 2), round(agreement, 4), "fused scores rank differently")
    if speedup < MIN_GAIN:
        return Verdict("torch", round(speedup, 2), round(agreement, 4), f"fused is not {MIN_GAIN}x faster")
    return Verdict("fused", round(speedup, 2), round(agreement, 4), "faster, same ranking")


def select(backend: str, signature: str, model: torch.nn.Module, plain: Forward, example: dict,
           timing: Callable[[], dict], probes: Callable[[], list[dict]],
           output: str = "logits") -> tuple[Forward, str, Verdict | None]:
    """(forward, backend name, verdict) for `model`, whose eager forward is `plain`: "torch" keeps it, "fused"
    traces it on `example`, "auto" follows the verdict cached for this machine and `signature`, else probes
    (`timing()`: one full batch; `probes()`: batches of real text) and caches what it found."""
    backend = requested(backend)
    if backend == "torch":
        return plain, "torch", None
    if backend == "fused":
        return fused(model, example, output), "fused", None
    key = machine_key(signature)
    verdict = cached(key)
    fast = None
    if verdict is None or verdict.backend == "fused":
        try:
            fast = fused(model, example, output)
        except CascadeError as e:
            verdict = Verdict("torch", why=str(e))
            remember(key, verdict)
    if verdict is None:
        verdict = probe(plain, fast, timing(), probes())
        remember(key, verdict)
    if verdict.backend == "fused" and fast is not None:
        return fast, "fused", verdict
    return plain, "torch", verdict


def probe_texts() -> list[str]:
    """Real text to compare backends on: the demo passages (`cascade demo`'s corpus)."""
    from importlib import resources

    data = resources.files("cascade") / "data" / "demo.jsonl"
    docs = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line]
    return [f"{d.get('title', '')}. {d['text']}" for d in docs]


def probe_pairs(queries: int = 1) -> list[list[tuple[str, str]]]:
    """The first demo queries, each paired with every demo passage (on topic and off), one list per query."""
    from importlib import resources

    asked = json.loads((resources.files("cascade") / "data" / "demo_queries.json").read_text(encoding="utf-8"))
    texts = probe_texts()
    return [[(q["query"], t) for t in texts] for q in asked[:queries]]


def verdicts_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cascade" / "backends.json"


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


def remember(key: str, verdict: Verdict) -> None:
    from cascade.fileio import atomic_write

    verdicts = read_verdicts()
    verdicts.pop(key, None)
    verdicts = dict(list(verdicts.items())[-(KEPT - 1):] + [(key, asdict(verdict))])
    try:
        atomic_write(verdicts_path(), json.dumps(verdicts, indent=1))
    except OSError:  # a read-only home only costs the probe again next time
        pass


def here() -> dict[str, dict]:
    """The cached verdicts for this machine, by model signature (what `cascade info` lists)."""
    prefix = machine_key("")
    return {key[len(prefix):]: v for key, v in read_verdicts().items() if key.startswith(prefix)}


def cached(key: str) -> Verdict | None:
    entry = read_verdicts().get(key)
    try:
        return Verdict(**entry) if isinstance(entry, dict) else None
    except TypeError:
        return None
