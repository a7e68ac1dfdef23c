"""Index SciFact and time `cascade search` stage by stage; writes benchmarks/results/embedded.{json,md}.

    python benchmarks/embedded.py [--data ../shared/data/beir/scifact] [--queries 20]

What it measures, all in one run on this machine:
  * `cascade index` on the SciFact corpus (5,183 abstracts): wall time and bytes on disk;
  * per-stage latency (p50/p95 ms) of Cascade.search over the first N SciFact test queries,
    retrieve=150, rerank_depth=30, top=8, after one warm-up query;
  * the baseline for the rerank stage, measured on the same 30 candidates per query:
    sentence-transformers CrossEncoder.predict(pairs, batch_size=32) in fp32 (the usual recipe).

No trained MS MARCO cross-encoder can be downloaded here, so the reranker is a latency proxy with the
same architecture and size as cross-encoder/ms-marco-MiniLM-L-6-v2: the all-MiniLM-L6-v2 body with an
untrained one-logit head. Its scores are meaningless; its cost is the real model's cost.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from beir_eval import splice_readme

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def make_proxy_reranker(out: Path) -> Path:
    from transformers import AutoTokenizer, BertForSequenceClassification

    from cascade.inference import quiet_transformers
    from cascade.models import DEFAULT_ENCODER, bundled_path

    quiet_transformers()
    body = str(bundled_path(DEFAULT_ENCODER))
    BertForSequenceClassification.from_pretrained(body, num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(body).save_pretrained(out)
    return out


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
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "beir" / "scifact")
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()

    from cascade import Cascade

    with tempfile.TemporaryDirectory(prefix="cascade-bench-") as tmp:
        index_dir = Path(tmp) / "index"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cascade.cli", "index", str(args.data), "--out", str(index_dir),
                               "--quiet"], capture_output=True, text=True, check=True)
        index_seconds = time.perf_counter() - start
        counts = re.search(r"indexed (\d+) documents as (\d+) passages", proc.stdout)
        size = disk_bytes(index_dir)

        reranker = make_proxy_reranker(Path(tmp) / "proxy-reranker")
        queries = first_test_queries(args.data, args.queries)
        cascade = Cascade.load(index_dir, reranker=str(reranker))
        cascade.search(queries[0])  # warm-up
        content = {p.id: p.content for p in cascade.index.passages}
        timings: dict[str, list[float]] = {}
        candidates = []
        for q in queries:
            result = cascade.search(q, retrieve=150, rerank_depth=30, top=8)
            for stage, ms in result.timings_ms.items():
                timings.setdefault(stage, []).append(ms)
            fused = cascade.search(q, retrieve=150, rerank_depth=0, top=30).hits
            candidates.append([(q, content[h.id]) for h in fused])

        from sentence_transformers import CrossEncoder as STCrossEncoder

        baseline = STCrossEncoder(str(reranker), device="cpu", max_length=512)
        baseline.predict(candidates[0], batch_size=32)  # warm-up
        baseline_ms = []
        for pairs in candidates:
            t = time.perf_counter()
            baseline.predict(pairs, batch_size=32, show_progress_bar=False)
            baseline_ms.append((time.perf_counter() - t) * 1000)

    stages = {k: pct(v) for k, v in timings.items()}
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "data": str(args.data),
        "index": {"documents": int(counts[1]), "passages": int(counts[2]), "seconds": round(index_seconds, 1),
                  "bytes": size},
        "search": {"queries": len(queries), "retrieve": 150, "rerank_depth": 30, "top": 8, "stages_ms": stages,
                   "reranker": "MiniLM-L6 cross-encoder architecture (latency proxy, untrained head)"},
        "baseline_rerank_ms": pct(baseline_ms),
        "rerank_speedup_vs_baseline_p50": round(pct(baseline_ms)["p50"] / stages["rerank"]["p50"], 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "embedded.json").write_text(json.dumps(report, indent=2) + "\n")
    table = render(report)
    (RESULTS / "embedded.md").write_text(table)
    splice_readme("embedded", table)
    print(table)


def render(r: dict) -> str:
    s = r["search"]["stages_ms"]
    lines = [
        f"`cascade index` on SciFact: {r['index']['documents']:,} documents -> {r['index']['passages']:,} passages "
        f"in {r['index']['seconds']} s, {r['index']['bytes'] / 2**20:.1f} MiB on disk.",
        "",
        f"`cascade search` per stage over {r['search']['queries']} SciFact test queries "
        "(retrieve 150, rerank 30, top 8; MiniLM-L6 cross-encoder):",
        "",
        "| stage | p50 ms | p95 ms |",
        "|---|---:|---:|",
        *[f"| {k} | {v['p50']:.1f} | {v['p95']:.1f} |" for k, v in s.items()],
        f"| baseline rerank: sentence-transformers CrossEncoder.predict, fp32, batch 32 | "
        f"{r['baseline_rerank_ms']['p50']:.1f} | {r['baseline_rerank_ms']['p95']:.1f} |",
        "",
        f"Rerank stage speed-up over the baseline (p50, same run, same pairs): "
        f"{r['rerank_speedup_vs_baseline_p50']}x.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
