"""Dev-only: which bundled reranker should be the default, given the default 200 ms search budget?

    python benchmarks/default_reranker_dev.py

For each bundled reranker, on SciFact's held-out train queries (the ones `cascade train` keeps for dev)
and NFCorpus dev: nDCG@10 of the full search path (hybrid 150 -> rerank 30, default blend) with no budget
and with the default budget, the candidates scored under the budget, and p50 total latency. Writes
benchmarks/results/default-reranker-dev.{json,md}. No test split is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from _common import DATA, publish


def dev_split(name: str):
    from cascade.evaluate.beir import available_splits, load_split
    from cascade.train.config import TrainConfig
    from cascade.train.data import hold_out

    if "dev" in available_splits(DATA / name):
        split = load_split(DATA / name, "dev")
        return split.queries, split.qrels
    train = load_split(DATA / name, "train")
    config = TrainConfig(out=Path("unused"))  # only its dev-split defaults
    _, dev = hold_out(list(train.queries), config.dev_fraction, config.seed)
    return {q: train.queries[q] for q in dev}, {q: train.qrels[q] for q in dev}


def main() -> None:
    from cascade.evaluate.metrics import mean, per_query
    from cascade.evaluate.runner import RUN_DEPTH, doc_run, final_ranking, open_cascade
    from cascade.models.hub import BUNDLED_RERANKERS
    from cascade.settings import SearchSettings

    DEFAULT_BUDGET_MS = SearchSettings().budget_ms
    from cascade.pipeline import index_pair_tokens
    from cascade.rerank import CrossEncoder

    rows = []
    for name in ("scifact", "nfcorpus"):
        cascade = open_cascade(DATA / name, None, None, progress=False)
        queries, qrels = dev_split(name)
        for model in BUNDLED_RERANKERS:
            cascade.reranker = CrossEncoder(model, fit=index_pair_tokens(cascade.index.manifest))  # as search loads it
            row = {"dataset": name, "queries": len(queries), "reranker": model}
            for label, budget in (("no budget", None), ("budget", DEFAULT_BUDGET_MS)):
                runs, total, scored = {}, [], []
                for q, text in queries.items():
                    r = cascade.run_stages(text, retrieve=150, rerank_depth=30, budget_ms=budget)
                    runs[q] = doc_run(cascade.index.passages, *final_ranking(r), RUN_DEPTH)
                    total.append(r.timings_ms["total"])
                    scored.append(r.statuses["rerank"]["scored"])
                row[label] = {"ndcg@10": round(mean(per_query(runs, qrels, ["ndcg@10"])["ndcg@10"]), 4),
                              "mean_scored": round(float(np.mean(scored)), 1),
                              "total_p50_ms": round(float(np.percentile(total, 50)), 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"Full search path on dev (hybrid 150 -> rerank 30, default blend), without and with the default "
             f"{DEFAULT_BUDGET_MS:g} ms budget:", "",
             "| dev set | reranker | nDCG@10, no budget | p50 ms | nDCG@10, budget | scored of 30 | p50 ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        a, b = r["no budget"], r["budget"]
        lines.append(f"| {r['dataset']} ({r['queries']} q) | {r['reranker']} | {a['ndcg@10']:.4f} | "
                     f"{a['total_p50_ms']} | {b['ndcg@10']:.4f} | {b['mean_scored']} | {b['total_p50_ms']} |")
    publish("default-reranker-dev", rows, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
