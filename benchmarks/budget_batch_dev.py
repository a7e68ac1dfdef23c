"""Dev-only: which reranking batch size serves a latency budget best? Writes benchmarks/results/budget-batch-dev.{json,md}.

    python benchmarks/budget_batch_dev.py [--budget-ms 200]

Runs the search path (hybrid 150 -> rerank 30, default blend) under the budget on the 81 SciFact train queries
`cascade train` holds out, once per batch size: nDCG@10, candidates scored, and p50/max total latency. Bigger
batches are more efficient per pair but coarser: a budget can only stop between batches, and one
mispredicted batch is the overrun. No test split is read; this is where the search default was chosen: 8
with 256-token pairs, 32 (all 30 candidates in one call) since pairs are read in 128 tokens and fused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import DATA, publish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--budget-ms", type=float, default=200.0)
    args = parser.parse_args()

    from cascade.evaluate.beir import load_split
    from cascade.evaluate.metrics import mean, per_query
    from cascade.evaluate.runner import RUN_DEPTH, doc_run, final_ranking, open_cascade
    from cascade.pipeline import choose_reranker
    from cascade.train.config import TrainConfig
    from cascade.train.data import hold_out

    cascade = open_cascade(args.data, None, None, progress=False)
    cascade.reranker = choose_reranker("cascade-reranker", None, cascade.index).reranker  # fitted, as search loads it
    train = load_split(args.data, "train")
    config = TrainConfig(out=Path("unused"))  # only its dev-split defaults
    _, dev = hold_out(list(train.queries), config.dev_fraction, config.seed)
    rows = []
    for batch_size in (8, 16, 32):
        runs, total, scored = {}, [], []
        for q in dev:
            r = cascade.run_stages(train.queries[q], retrieve=150, rerank_depth=30, budget_ms=args.budget_ms,
                                   batch_size=batch_size)
            runs[q] = doc_run(cascade.index.passages, *final_ranking(r), RUN_DEPTH)
            total.append(r.timings_ms["total"])
            scored.append(r.statuses["rerank"]["scored"])
        ndcg = mean(per_query(runs, {q: train.qrels[q] for q in dev}, ["ndcg@10"])["ndcg@10"])
        rows.append({"batch_size": batch_size, "ndcg@10": round(ndcg, 4), "mean_scored": round(float(np.mean(scored)), 1),
                     "total_p50_ms": round(float(np.percentile(total, 50)), 1),
                     "total_max_ms": round(float(np.max(total)), 1)})
        print(json.dumps(rows[-1]), flush=True)
    lines = [f"Search under a {args.budget_ms:g} ms budget, {len(dev)} held-out SciFact train queries:", "",
             "| batch size | nDCG@10 | candidates scored (of 30) | total p50 ms | total max ms |",
             "|---:|---:|---:|---:|---:|",
             *[f"| {r['batch_size']} | {r['ndcg@10']:.4f} | {r['mean_scored']} | {r['total_p50_ms']} | "
               f"{r['total_max_ms']} |" for r in rows], ""]
    publish("budget-batch-dev", {"budget_ms": args.budget_ms, "queries": len(dev), "rows": rows}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
