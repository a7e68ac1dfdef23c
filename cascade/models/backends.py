"""How a loaded model runs on this machine: eager PyTorch, traced once and fused by oneDNN Graph, or OpenVINO
int8 (the cross-encoder's pairs and the bi-encoder's passages; a search's query always runs eager in fp32).

Eager bf16 on the 2-core AMX CPU spends 35% of a 30-pair rerank in matmuls, 24% in attention, 20% in GELU
and 10% in copies (torch.profiler): element-wise work and memory traffic, not arithmetic. Tracing the model
once (`torch.jit.trace`, 0.3 s) and letting oneDNN Graph fuse it cuts that: on real SciFact candidates at
128 tokens, 30 pairs in one call 109.6 -> 74.4 ms p50 (1.47x), in batches of 8 113.0 -> 88.0 ms, ranked
as eager ranks them (Spearman 0.9995, logits within 0.14: bf16 rounding in another order). The alternatives,
measured on the same machine: torch.compile (inductor, frozen weights; what torch now recommends over
TorchScript) was as fast but compiles 7-9 s for every new input shape and needs a C++ compiler at run
time; `optimize_for_inference` was slower than eager at 30 pairs; ONNX Runtime and OpenVINO did not beat
torch bf16 (benchmarks/cpu_backends.py). Without AMX they can: on a real AMD Zen 4 OpenVINO int8 ran the student
1.6x and the teacher 1.9x fused bf16 (`cascade.models.openvino_int8`), so "auto" times it there too.

Which is faster depends on the CPU (bf16 units, AVX2 only) and the model, so "auto" measures once per
machine, model and window: the fastest backend wins where it is at least `MIN_GAIN` faster on real pairs scored as search
scores them (30 demo pairs, each padded to its own length: a short probe on one full-window batch chose
fused on an AVX2-capped CPU where it was 7% slower on real candidates, since fused pads a call's rows up to
ROW_STEP) and ranks real pairs as eager does (Spearman >= `MIN_AGREEMENT`). Verdicts are cached per machine
(`cascade.models.verdicts`, which also measures the precision); `CASCADE_BACKEND` forces a backend for
the process.
Fused logits differ from eager ones by bf16 rounding in another order (int8 ones more), so the backend is part of a
reranker's cache signature; alone, batched or on one thread, a fused pair scores exactly the same
(benchmarks/batch_invariance.py).
"""

from __future__ import annotations

import copy
import functools
import json
import warnings
from typing import Callable

import numpy as np
import torch

from cascade.errors import CascadeError
from cascade.models.runtime import cpu_has_amx, option
from cascade.models.verdicts import Forward, Verdict, cached, machine_key, remember, speedup

BACKENDS = ("auto", "torch", "fused", "openvino")
BACKEND_ENV = "CASCADE_BACKEND"  # what "auto" means for every model in the process
MIN_GAIN = 1.1  # a backend must be this much faster than eager to be chosen
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
MAX_TOKENS = 32 * 128  # ... and a bigger call runs in chunks of at most this many tokens (rows x padded length)
SHAPES = 512  # graphs kept per model (oneDNN Graph's default, 12, would send later shapes back to eager)


class Fused:
    """A traced, frozen model that oneDNN Graph fuses, one graph per input shape.

    TorchScript runs a new shape once unfused (to profile it) and fuses from the second call, so a pair's
    score would depend on whether its shape had been seen before. Each new shape is therefore run twice and
    the fused result kept, and shapes are few: rows padded up to a multiple of ROW_STEP, lengths already
    multiples of 32 (`cascade.models.runtime`). Each shape's graph keeps its own buffers, which grow with rows x
    length^2 (attention), so a call holds at most MAX_TOKENS tokens: 32 rows at search's 128 tokens, 8 at 512.
    """

    def __init__(self, graph: torch.jit.ScriptModule, keys: tuple[str, ...]):
        self.graph, self.keys, self.seen = graph, keys, set()

    def __call__(self, features: dict) -> torch.Tensor:
        rows, length = features[self.keys[0]].shape
        step = max(ROW_STEP, MAX_TOKENS // length // ROW_STEP * ROW_STEP)
        return torch.cat([self._run({k: v[start : start + step] for k, v in features.items()})
                          for start in range(0, rows, step)])

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
def probe(plain: Forward, fast: dict[str, Forward], timing: list[dict], pairs: list[dict]) -> Verdict:
    """Time each of `fast` against `plain` on `timing` (the batches a real call makes), compare their scores on
    `pairs` (batches of real text), and choose the fastest that is MIN_GAIN faster and ranks as eager does."""
    reference = np.concatenate([plain(f).float().reshape(-1).numpy() for f in pairs])
    found = {}
    for name, forward in fast.items():
        scores = np.concatenate([forward(f).float().reshape(-1).numpy() for f in pairs])
        agreement = _spearman(reference, scores) if len(scores) > 1 else 1.0
        found[name] = (round(speedup(plain, forward, timing), 2), round(agreement, 4))
    why = "; ".join(f"{name} {gain}x eager, Spearman {agreement}" for name, (gain, agreement) in found.items())
    good = {name: m for name, m in found.items() if m[0] >= MIN_GAIN and m[1] >= MIN_AGREEMENT}
    if not good:
        best = max(found, key=lambda name: found[name][0])
        return Verdict("torch", *found[best], f"none {MIN_GAIN}x faster with the same ranking ({why})")
    best = max(good, key=lambda name: good[name][0])
    return Verdict(best, *good[best], f"fastest with the same ranking ({why})")


def build(backend: str, signature: str, model: torch.nn.Module, example: dict, calibration: Callable[[], list[dict]],
          output: str = "logits") -> Forward:
    """The forward `backend` ("fused" or "openvino") runs `model` with; a CascadeError if it cannot."""
    if backend == "fused":
        return fused(model, example, output)
    if example[next(iter(example))].device.type != "cpu":
        raise CascadeError("the openvino backend runs on CPU only (use device='cpu', or backend torch or fused)")
    from cascade.models import openvino_int8

    keys = tuple(example)
    module = _Positional(model if _fp32(model) else copy.deepcopy(model).float(), keys, output)
    return openvino_int8.int8(module, keys, example, calibration, signature)


def _fp32(model: torch.nn.Module) -> bool:
    return next(model.parameters()).dtype == torch.float32


def tried(model: torch.nn.Module, precision: str = "auto") -> tuple[str, ...]:
    """What "auto" measures against eager: fused; and OpenVINO int8 where installed, except for a bf16 model on
    an AMX CPU, where fused bf16 ran as fast as int8 (`cascade.models.openvino_int8`; skipping it there saves
    the export). A precision the caller chose, e.g. fp32 for bit-stable runs, keeps int8 out."""
    from cascade.models import openvino_int8

    int8 = precision == "auto" and openvino_int8.installed() and (_fp32(model) or not cpu_has_amx())
    return ("fused", "openvino") if int8 else ("fused",)


def select(backend: str, signature: str, model: torch.nn.Module, plain: Forward, example: dict,
           timing: Callable[[], list[dict]], probes: Callable[[], list[dict]],
           output: str = "logits", precision: str = "auto") -> tuple[Forward, str, Verdict | None]:
    """(forward, backend name, verdict) for `model`, whose eager forward is `plain`: "torch" keeps it, "fused"
    traces it on `example`, "openvino" quantises it to int8 on `probes()` (batches of real text); "auto"
    follows the verdict cached for this machine and `signature`, else measures what `tried` lists for the
    `precision` asked for (`timing()`: the batches one real call makes) and caches what it found."""
    backend = requested(backend)
    if backend == "torch":
        return plain, "torch", None
    probes = functools.cache(probes)  # int8 calibration and the agreement check share one tokenising
    if backend != "auto":
        return build(backend, signature, model, example, probes, output), backend, None
    candidates, key = tried(model, precision), machine_key(signature)
    verdict = cached(key)
    if verdict is None or tuple(verdict.tried) != candidates:  # measured again once OpenVINO is installed
        built, failed = {}, []
        for name in candidates:
            try:
                built[name] = build(name, signature, model, example, probes, output)
            except CascadeError as e:
                failed.append(str(e))
        verdict = probe(plain, built, timing(), probes()) if built else Verdict("torch", why="; ".join(failed))
        verdict.tried = candidates
        remember(key, verdict)
        forward = built.get(verdict.choice, plain)
    elif verdict.choice == "torch":
        forward = plain
    else:
        try:
            forward = build(verdict.choice, signature, model, example, probes, output)
        except CascadeError as e:
            verdict = Verdict("torch", why=str(e), tried=candidates)
            remember(key, verdict)
            forward = plain
    return forward, verdict.choice, verdict


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


