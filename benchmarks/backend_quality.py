"""What each model backend costs in quality: the bi-encoder and the bundled rerankers in fp32, as `auto` runs
them here, and in OpenVINO int8, on SciFact test and NFCorpus dev.

    python benchmarks/backend_quality.py [--keep-indexes DIR] [--datasets scifact nfcorpus]

`auto` may pick int8 on a CPU where bf16 does not pay (`cascade.models.openvino_int8`), judged by a short
probe on the demo's pairs (Spearman >= `MIN_AGREEMENT` against eager). This measures what that costs where it
counts, on whole collections. Per dataset:
- indexes built with passage vectors from the bi-encoder in torch fp32, as auto runs it, and in int8 (queries
  are always encoded in fp32) -> nDCG@10 of dense and hybrid retrieval;
- on the fp32 index's candidates (hybrid top 150 -> rerank 30, default blend), each bundled reranker in torch
  fp32, as auto runs it, and in int8 -> nDCG@10 blended and alone (`--blend 0`, the same scores from the score
  cache) and the reranker's p50 ms per query (of the blended run, with a cold cache).
Every row's change against its fp32 row comes with a 95% paired bootstrap interval over queries.
Needs the openvino extra. Writes benchmarks/results/backend-quality.{json,md} and the README table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import DATA, kind, machine, publish

SPLITS = {"scifact": "test", "nfcorpus": "dev"}
ENCODERS = (("fp32", "torch"), ("auto", "auto"), ("fp32", "openvino"))  # (CASCADE_PRECISION, CASCADE_BACKEND)
RERANKERS = (("fp32", "torch"), ("auto", "auto"), ("auto", "openvino"))  # (precision, backend)


def ndcg(stage) -> list[float]:
    values = stage.per_query["ndcg@10"]
    return [values[q] for q in sorted(values)]


def change(before: list[float], after: list[float]) -> str:
    from cascade.evaluate.metrics import paired_bootstrap

    mean, low, high = paired_bootstrap(before, after)
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-indexes", type=Path, default=None, help="build indexes here instead of a temp dir")
    parser.add_argument("--datasets", nargs="+", choices=list(SPLITS), default=list(SPLITS))
    args = parser.parse_args()

    from cascade.evaluate.beir import load_split
    from cascade.evaluate.runner import evaluate, open_cascade
    from cascade.models.hub import BUNDLED_RERANKERS
    from cascade.pipeline import Cascade, index_pair_tokens
    from cascade.rerank import CrossEncoder, RerankerChoice
    from cascade.rerank.cache import MemoryCache

    rows = []
    with tempfile.TemporaryDirectory(prefix="cascade-backends-") as tmp:
        for name in args.datasets:
            split = load_split(DATA / name, SPLITS[name])
            base = None
            for precision, backend in ENCODERS:  # the index's encoder reads what auto means from these
                os.environ["CASCADE_PRECISION"], os.environ["CASCADE_BACKEND"] = precision, backend
                folder = (args.keep_indexes or Path(tmp)) / f"{name}-{precision}-{backend}"
                cascade = open_cascade(DATA / name, folder, None, progress=False)
                result = evaluate(cascade, split, ["dense", "hybrid"], progress=False)
                cascade.encoder.passage_forward()  # settles what auto chose (a kept index was not encoded now)
                label = f"bi-encoder passages {kind(cascade.encoder)} {cascade.encoder.backend}"
                for stage in ("dense", "hybrid"):
                    values = ndcg(result.stages[stage])
                    row = {"dataset": name, "what": f"{label}: {stage}", "ndcg@10": round(float(sum(values) /
                           len(values)), 4), "values": values}
                    reference = next((r for r in rows if r["dataset"] == name and r["what"].endswith(stage)), None)
                    row["change"] = change(reference["values"], values) if reference else "reference"
                    rows.append(row)
                    print(row["what"], row["ndcg@10"], row["change"], flush=True)
                base = base or cascade
            os.environ.pop("CASCADE_PRECISION"), os.environ.pop("CASCADE_BACKEND")
            fit = index_pair_tokens(base.index.manifest)
            for model in BUNDLED_RERANKERS:
                reference = alone_reference = None
                for precision, backend in RERANKERS:
                    reranker = CrossEncoder(model, fit=fit, precision=precision, backend=backend)
                    # cold cache for the timed, blended run; the reranker alone (blend 0) reuses its scores
                    cascade = Cascade(base.index, base.encoder, RerankerChoice(reranker), cache=MemoryCache())
                    stage = evaluate(cascade, split, ["hybrid+rerank"], progress=False).stages["hybrid+rerank"]
                    values = ndcg(stage)
                    alone = ndcg(evaluate(cascade, split, ["hybrid+rerank"], progress=False, blend=0)
                                 .stages["hybrid+rerank"])
                    row = {"dataset": name, "what": f"{model} {kind(reranker)} {reranker.backend}",
                           "ndcg@10": round(float(sum(values) / len(values)), 4), "values": values,
                           "rerank_p50_ms": round(stage.latency_ms["rerank_p50"], 1),
                           "change": change(reference, values) if reference else "reference",
                           "alone": round(float(sum(alone) / len(alone)), 4), "alone_values": alone,
                           "alone_change": change(alone_reference, alone) if alone_reference else "reference"}
                    reference, alone_reference = reference or values, alone_reference or alone
                    rows.append(row)
                    print(row["what"], row["ndcg@10"], row["change"], row["alone"], row["alone_change"],
                          row["rerank_p50_ms"], flush=True)
    info = machine()
    lines = ["nDCG@10 per backend, each change against the fp32 torch row above it with a 95% paired bootstrap "
             "interval over queries; rerankers on the fp32 index's hybrid top 150 -> rerank 30 (default blend), "
             "with the reranker's p50 ms per query on this CPU, and the reranker alone (`--blend 0`) on the same "
             "scores.", "",
             "| dataset | model, precision, backend: stage | nDCG@10 | change vs fp32 | reranker alone | change vs fp32 "
             "| rerank p50 ms |",
             "|---|---|---:|---|---:|---|---:|"]
    lines += [f"| {r['dataset']} {SPLITS[r['dataset']]} | {r['what']} | {r['ndcg@10']:.4f} | {r['change']} | "
              + (f"{r['alone']:.4f} | {r['alone_change']} | " if "alone" in r else " |  | ")
              + f"{r.get('rerank_p50_ms', '')} |" for r in rows]
    publish("backend-quality", {"machine": info, "rows": rows}, "\n".join(lines) + "\n", marker="backend-quality")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
