"""The same rerank on three kinds of CPU, emulated on this one by capping the instructions the kernels may use.

    python benchmarks/isa_levels.py [--queries 30] [--levels native AVX512_CORE_BF16 AVX2] [--name isa-levels]

Cascade runs on CPUs with AMX, with AVX512-BF16 but no AMX (AMD Zen 4), and with AVX2 only, and what is
fastest differs between them (bf16 only pays with bf16 units). A session gets one kind of machine, so this
script runs the measurement once per ISA level in a child process whose oneDNN (ONEDNN_MAX_CPU_ISA), ATen
(ATEN_CPU_CAPABILITY) and MKL (MKL_ENABLE_INSTRUCTIONS) kernels are capped at that level, on the same cores.
Cascade sees the cap (`cascade.machine.isa_cap`): it hides the flags above it, so precision and `auto`'s
backend verdict are chosen as on that CPU. An emulation, not the machine: clocks, caches and cores stay this
CPU's, so compare the ratios within a level (every row against that level's baseline), not absolute times
with a real Zen 4 or AVX2 machine.

Per level, on the hybrid top 30 of the first N SciFact test queries (one call per query): the seeds' recipe
(sentence-transformers CrossEncoder fp32, max_length 512, batch 32), the bundled teacher and student at the
window search uses, eager and fused, in the precision `auto` picks there (measured where the level has bf16
units: `cascade.models.verdicts.precision_verdict`), and eager in fp32 and in bf16 forced, to check that
pick; OpenVINO int8 where the openvino extra is installed; and the bi-encoder's passages/s. OpenVINO's
oneDNN is capped too, but a release build does not cap OpenVINO's own kernels (attention, element-wise:
`OV_CPU_MAX_ISA` is a debug-build switch), so its rows below native flatter it somewhat.
Writes benchmarks/results/NAME.{json,md} (default isa-levels) and the README table of that name.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _common import DATA, machine, name_option, publish

# Level -> (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, what it stands for)
LEVELS = {
    "native": (None, None, None, "this CPU as it is"),
    "AVX512_CORE_BF16": ("AVX512_CORE_BF16", "avx512", "AVX512", "AVX512-BF16 and VNNI, no AMX (like AMD Zen 4)"),
    "AVX2": ("AVX2", "avx2", "AVX2", "AVX2 only (like older AMD EPYC)"),
}


def measure(queries: int) -> dict:
    """One level's rows, in this process (whose environment holds the cap)."""
    import torch
    from rerank_latency import encode_rates, time_predict
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from cascade import CrossEncoder
    from cascade.evaluate.beir import load_split
    from cascade.evaluate.runner import open_cascade
    from cascade.models import openvino_int8
    from cascade.models.hub import resolve
    from cascade.models.runtime import cpu_has_fast_bf16, dtype_name
    from cascade.models.verdicts import forget, precision_verdict
    from cascade.pipeline import index_pair_tokens

    forget()  # this level's verdicts are measured in this run, not read from an earlier one

    split = load_split(DATA / "scifact", "test")
    qids = list(split.queries)[:queries]
    cascade = open_cascade(DATA / "scifact", None, None, progress=False)
    candidates = [cascade.run_stages(split.queries[q], retrieve=150, rerank_depth=0).fusion[0][:30] for q in qids]
    common = (cascade, split, qids, split.queries, candidates)
    fit = index_pair_tokens(cascade.index.manifest)
    baseline = STCrossEncoder(str(resolve("cascade-reranker")), device="cpu", max_length=512,
                              model_kwargs={"dtype": torch.float32})
    rows = [time_predict("seeds' recipe: sentence-transformers fp32, max_length 512, batch 32",
                         lambda p: baseline.predict(p, batch_size=32, show_progress_bar=False), *common, depth=30)]
    verdicts = {}
    for model in ("cascade-reranker", "cascade-reranker-fast"):
        for backend in ("torch", "fused", "openvino", "auto") if openvino_int8.installed() else ("torch", "fused", "auto"):
            ce = CrossEncoder(model, fit=fit, backend=backend)
            if backend == "auto":
                verdicts[model] = {"backend": ce.backend, **(vars(ce.verdict) if ce.verdict else {})}
                continue
            name = "int8 openvino" if backend == "openvino" else backend  # torch and fused: auto's precision
            rows.append(time_predict(f"{model} {name}, max_length {ce.max_length}, batch 32",
                                     lambda p, ce=ce: ce.predict(p, batch_size=32, raw_scores=True), *common, depth=30))
        for precision in ("fp32", "bf16") if cpu_has_fast_bf16() else ():  # what auto's precision probe weighed
            ce = CrossEncoder(model, fit=fit, backend="torch", precision=precision)
            rows.append(time_predict(f"{model} torch in {precision} (forced)",
                                     lambda p, ce=ce: ce.predict(p, batch_size=32, raw_scores=True), *common, depth=30))
    base = rows[0].summary()["p50_ms"]
    precision = vars(precision_verdict()) if cpu_has_fast_bf16() else {"why": "no bf16 units: fp32, not measured"}
    return {"machine": machine(), "threads": torch.get_num_threads(),
            "precision": dict(precision, chosen=dtype_name(CrossEncoder(model, fit=fit, warm_up=False).dtype)),
            "auto": verdicts,
            "rows": [dict(r.summary(), speedup=round(base / r.summary()["p50_ms"], 1)) for r in rows],
            "encoding": encode_rates(cascade, n=256)}


def run_level(level: str, queries: int) -> dict:
    """`measure` in a child process with the level's caps (they must be set before the kernels load)."""
    onednn, aten, mkl, _ = LEVELS[level]
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    for name, value in (("ONEDNN_MAX_CPU_ISA", onednn), ("ATEN_CPU_CAPABILITY", aten),
                        ("MKL_ENABLE_INSTRUCTIONS", mkl)):
        if value:
            env[name] = value
    out = subprocess.run([sys.executable, __file__, "--worker", "--queries", str(queries)], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def render(levels: dict, queries: int) -> str:
    names = list(levels)
    head = [f"{n}: {LEVELS[n][3]}" for n in names]
    lines = [f"Hybrid top 30 of {queries} SciFact test queries, one call per query, p50 ms per query (in brackets: "
             "speed-up over that level's seeds' recipe) and nDCG@10. Levels other than native are this CPU with "
             "its kernels capped at that instruction set (an emulation: compare within a column). "
             + "; ".join(head) + ".", "",
             "| configuration | " + " | ".join(names) + " | nDCG@10 |", "|---|" + "---:|" * (len(names) + 1)]
    by_name: dict[str, dict] = {}  # one line per configuration, whatever precision each level ran it in
    for level in names:
        for row in levels[level]["rows"]:
            by_name.setdefault(row["name"], {})[level] = row
    for key, cells in by_name.items():
        ndcg = "/".join(sorted({f"{c['ndcg@10']:.4f}" for c in cells.values()}))
        lines.append(f"| {key} | " + " | ".join(
            f"{cells[n]['p50_ms']} ({cells[n]['speedup']}x)" if n in cells else "" for n in names) + f" | {ndcg} |")
    lines += ["", "Precision each level ran in (auto), what `--backend auto` chose there, and the bi-encoder's "
              "passages/s (256 passages, batch 16) per level:", "",
              "| level | precision | teacher auto | student auto | bi-encoder passages/s |",
              "|---|---|---|---|---|"]
    for level in names:
        data = levels[level]
        auto = {model: f"{v['backend']} ({v.get('speedup')}x)" for model, v in data["auto"].items()}
        enc = ", ".join(f"{e['name'].removeprefix('bi-encoder ')} {e['passages_per_s']}" for e in data["encoding"])
        precision = f"{data['precision']['chosen']} ({data['precision']['why']})"
        lines.append(f"| {level} | {precision} | {auto['cascade-reranker']} | {auto['cascade-reranker-fast']} | {enc} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--levels", nargs="+", choices=list(LEVELS), default=list(LEVELS))
    name_option(parser, "isa-levels")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.queries)))
        return
    levels = {}
    for level in args.levels:
        print(f"level {level} ...", flush=True)
        levels[level] = run_level(level, args.queries)
    table = render(levels, args.queries)
    publish(args.name, {"machine": machine(), "queries": args.queries, "levels": levels}, table, marker=args.name)
    print(table)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
