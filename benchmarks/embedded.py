"""Index SciFact and time `cascade search` stage by stage; writes benchmarks/results/NAME.{json,md}.

    python benchmarks/embedded.py [--data ../shared/data/beir/scifact] [--queries 20] [--name embedded]

What it measures, all in one run on this machine:
  * `cascade index` on the SciFact corpus (5,183 abstracts): wall time and bytes on disk;
  * per-stage latency (p50/p95 ms) of Cascade.search over the first N SciFact test queries with the
    defaults (retrieve 150, rerank_depth 30, top 8, the bundled reranker, a 200 ms budget), after one
    warm-up query, how many queries the budget degraded and how many candidates it let the reranker score.

The reranker alone, against the sentence-transformers baseline, is benchmarks/rerank_latency.py.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, kind, machine, name_option, publish


def first_test_queries(data: Path, n: int) -> list[str]:
    qids = []
    with open(data / "qrels" / "test.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            qid = line.split("\t")[0]
            if qid not in qids:
                qids.append(qid)
    texts = {}
    with open(data / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            texts[q["_id"]] = q["text"]
    return [texts[q] for q in qids[:n]]


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pct(values: list[float]) -> dict:
    return {"p50": round(float(np.percentile(values, 50)), 2), "p95": round(float(np.percentile(values, 95)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--queries", type=int, default=20)
    name_option(parser, "embedded")
    args = parser.parse_args()

    from cascade import Cascade
    from cascade.settings import SearchSettings

    DEFAULT_BUDGET_MS = SearchSettings().budget_ms

    with tempfile.TemporaryDirectory(prefix="cascade-bench-") as tmp:
        index_dir = Path(tmp) / "index"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cascade.cli", "index", str(args.data), "--out", str(index_dir),
                               "--quiet"], capture_output=True, text=True, check=True)
        index_seconds = time.perf_counter() - start
        counts = re.search(r"indexed (\d+) documents as (\d+) passages", proc.stdout)
        size = disk_bytes(index_dir)

        queries = first_test_queries(args.data, args.queries)
        cascade = Cascade.load(index_dir, cache=None)  # no cache: every query pays for its reranking
        cascade.search(queries[0])  # warm-up
        timings: dict[str, list[float]] = {}
        degraded, scored = 0, []
        for q in queries:
            result = cascade.search(q)
            degraded += result.degraded
            scored.append(result.rerank["scored"])
            for stage, ms in result.timings_ms.items():
                timings.setdefault(stage, []).append(ms)

    stages = {k: pct(v) for k, v in timings.items()}
    report = {
        "machine": machine(),
        "data": str(args.data),
        "index": {"documents": int(counts[1]), "passages": int(counts[2]), "seconds": round(index_seconds, 1),
                  "bytes": size},
        "search": {"queries": len(queries), "retrieve": 150, "rerank_depth": 30, "top": 8, "stages_ms": stages,
                   "reranker": cascade.reranker.model_id,
                   "reranker_runs_in": f"{kind(cascade.reranker)} {cascade.reranker.backend}",
                   "budget_ms": DEFAULT_BUDGET_MS, "degraded": degraded,
                   "mean_scored": round(float(np.mean(scored)), 1)},
    }
    table = render(report)
    publish(args.name, report, table, marker=args.name)
    print(table)


def render(r: dict) -> str:
    s = r["search"]["stages_ms"]
    lines = [
        f"`cascade index` on SciFact: {r['index']['documents']:,} documents -> {r['index']['passages']:,} passages "
        f"in {r['index']['seconds']} s, {r['index']['bytes'] / 2**20:.1f} MiB on disk.",
        "",
        f"`cascade search` per stage over {r['search']['queries']} SciFact test queries with the defaults "
        f"(retrieve 150, rerank 30, top 8, `{r['search']['reranker']}` ({r['search']['reranker_runs_in']}), "
        f"{r['search']['budget_ms']:g} ms budget; "
        f"{r['search']['degraded']} of {r['search']['queries']} queries degraded by the budget, "
        f"{r['search']['mean_scored']} of 30 candidates scored on average):",
        "",
        "| stage | p50 ms | p95 ms |",
        "|---|---:|---:|",
        *[f"| {k} | {v['p50']:.1f} | {v['p95']:.1f} |" for k, v in s.items()],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
