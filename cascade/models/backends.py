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
machine, model and window: fused wins where it is at least `MIN_GAIN` faster on real pairs scored as search
scores them (30 demo pairs, each padded to its own length: a short probe on one full-window batch chose
fused on an AVX2-capped CPU where it was 7% slower on real candidates, since fused pads a call's rows up to
ROW_STEP) and ranks real pairs as eager does (Spearman >= `MIN_AGREEMENT`). Verdicts are cached per machine
(`cascade.models.verdicts`, which also measures the precision); `CASCADE_BACKEND` forces a backend for
the process.
Fused logits differ from eager ones by bf16 rounding in another order, so the backend is part of a
reranker's cache signature; alone, batched or on one thread, a fused pair scores exactly the same
(benchmarks/batch_invariance.py).
"""

from __future__ import annotations

import json
import warnings
from typing import Callable

import numpy as np
import torch

from cascade.errors import CascadeError
from cascade.models.runtime import option
from cascade.models.verdicts import Forward, Verdict, cached, machine_key, remember, speedup

BACKENDS = ("auto", "torch", "fused")
BACKEND_ENV = "CASCADE_BACKEND"  # what "auto" means for every model in the process
MIN_GAIN = 1.1  # fused must be this much faster than eager to be chosen
MIN_AGREEMENT = 0.99  # ... and rank the probe pairs this much like eager (Spearman)


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


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@torch.inference_mode()
def probe(plain: Forward, fast: Forward, timing: list[dict], pairs: list[dict]) -> Verdict:
    """Time both on `timing` (the batches a real call makes) and compare their scores on `pairs` (batches of
    real text)."""
    gain = speedup(plain, fast, timing)
    a = np.concatenate([plain(f).float().reshape(-1).numpy() for f in pairs])
    b = np.concatenate([fast(f).float().reshape(-1).numpy() for f in pairs])
    agreement = _spearman(a, b) if len(a) > 1 else 1.0
    if agreement < MIN_AGREEMENT:
        return Verdict("torch", round(gain, 2), round(agreement, 4), "fused scores rank differently")
    if gain < MIN_GAIN:
        return Verdict("torch", round(gain, 2), round(agreement, 4), f"fused is not {MIN_GAIN}x faster")
    return Verdict("fused", round(gain, 2), round(agreement, 4), "faster, same ranking")


def select(backend: str, signature: str, model: torch.nn.Module, plain: Forward, example: dict,
           timing: Callable[[], list[dict]], probes: Callable[[], list[dict]],
           output: str = "logits") -> tuple[Forward, str, Verdict | None]:
    """(forward, backend name, verdict) for `model`, whose eager forward is `plain`: "torch" keeps it, "fused"
    traces it on `example`, "auto" follows the verdict cached for this machine and `signature`, else probes
    (`timing()`: the batches one real call makes; `probes()`: batches of real text) and caches what it found."""
    backend = requested(backend)
    if backend == "torch":
        return plain, "torch", None
    if backend == "fused":
        return fused(model, example, output), "fused", None
    key = machine_key(signature)
    verdict = cached(key)
    fast = None
    if verdict is None or verdict.choice == "fused":
        try:
            fast = fused(model, example, output)
        except CascadeError as e:
            verdict = Verdict("torch", why=str(e))
            remember(key, verdict)
    if verdict is None:
        verdict = probe(plain, fast, timing(), probes())
        remember(key, verdict)
    if verdict.choice == "fused" and fast is not None:
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


