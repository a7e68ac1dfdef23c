"""Late interaction as a stage: can it let the cross-encoder rerank fewer candidates at the same quality?

    python benchmarks/late_interaction.py            # about 50 min on a 2-core CPU without bf16

1. Builds (or reuses) the SciFact and NFCorpus indexes with token vectors (`--late-interaction`, int8).
2. Chooses the late-interaction depth L and the smaller cross-encoder depth D on dev only: SciFact's
   held-out train queries (the ones `cascade train` kept for dev) and a seeded sample of NFCorpus train
   queries. The pick is the cheapest (D, then L) whose mean dev nDCG@10 is within 0.005 of
   hybrid -> cross-encoder at 30.
3. Reports, on SciFact test and NFCorpus dev (its test split is withheld), nDCG@10 and p50 latency of:
   hybrid; hybrid -> late interaction over all 150; hybrid -> cross-encoder 30; hybrid -> late L -> cross-encoder D.

Writes benchmarks/results/late-interaction.{json,md} and the README block `late`.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, publish  # noqa: E402
from default_reranker_dev import dev_split  # noqa: E402

REFERENCE_DEPTH = 30
LATE_DEPTHS = (60,)
CE_DEPTHS = (10, 20)
TOLERANCE = 0.005
NFCORPUS_TRAIN_SAMPLE = 100
REPORT = {"scifact": "test", "nfcorpus": "dev"}


def selection_queries(name: str) -> tuple[dict, dict]:
    """Dev queries for choosing depths: never the split the table reports."""
    if name == "scifact":
        return dev_split(name)
    from cascade.evaluate.beir import load_split

    train = load_split(DATA / name, "train")
    qids = sorted(train.queries)
    random.Random(13).shuffle(qids)
    qids = qids[:NFCORPUS_TRAIN_SAMPLE]
    return {q: train.queries[q] for q in qids}, {q: train.qrels[q] for q in qids}


def dev_ndcg(cascade, queries: dict, qrels: dict, late_depth: int, rerank_depth: int) -> float:
    from cascade.evaluate.metrics import mean, per_query
    from cascade.evaluate.runner import RUN_DEPTH, chain_ranking, doc_run

    runs = {q: doc_run(cascade.index.passages, *chain_ranking(
        cascade.run_stages(text, retrieve=150, late_depth=late_depth, rerank_depth=rerank_depth)), RUN_DEPTH)
        for q, text in queries.items()}
    return mean(per_query(runs, qrels, ["ndcg@10"])["ndcg@10"])


def main() -> None:
    from cascade.evaluate.beir import load_split
    from cascade.evaluate.report import label
    from cascade.evaluate.runner import evaluate, open_cascade

    engines = {name: open_cascade(DATA / name, None, "auto", progress=True, late_interaction=True) for name in REPORT}
    # 1. choose (L, D) on dev
    dev = {}
    for name, cascade in engines.items():
        queries, qrels = selection_queries(name)
        rows = {"reference": dev_ndcg(cascade, queries, qrels, 0, REFERENCE_DEPTH)}
        for late in LATE_DEPTHS:
            for depth in CE_DEPTHS:
                rows[f"{late}/{depth}"] = dev_ndcg(cascade, queries, qrels, late, depth)
        dev[name] = {"queries": len(queries), "ndcg@10": {k: round(v, 4) for k, v in rows.items()}}
        print(name, dev[name], flush=True)
    mean_dev = {k: float(np.mean([dev[n]["ndcg@10"][k] for n in dev])) for k in dev["scifact"]["ndcg@10"]}
    candidates = sorted(((d, late) for late in LATE_DEPTHS for d in CE_DEPTHS))
    fits = [(d, late) for d, late in candidates if mean_dev[f"{late}/{d}"] >= mean_dev["reference"] - TOLERANCE]
    depth, late = fits[0] if fits else max(candidates, key=lambda c: mean_dev[f"{c[1]}/{c[0]}"])
    choice = {"late_depth": late, "rerank_depth": depth, "within_tolerance": bool(fits)}

    # 2. report on test (SciFact) and dev (NFCorpus)
    raw, lines = {"dev_selection": dev, "mean_dev": mean_dev, "choice": choice}, []
    metrics = ["ndcg@10", "mrr@10", "recall@100"]
    lines += [f"| dataset | split | stages | {' | '.join(map(label, metrics))} | p50 ms | late p50 ms | "
              "cross-encoder p50 ms |", "|---|---|---|" + "---:|" * (len(metrics) + 3)]
    for name, split_name in REPORT.items():
        cascade = engines[name]
        split = load_split(DATA / name, split_name)
        alone = evaluate(cascade, split, ["hybrid", "hybrid+late", "hybrid+rerank"], late_depth=150,
                         rerank_depth=REFERENCE_DEPTH, progress=False)
        chained = evaluate(cascade, split, ["hybrid+late+rerank"], late_depth=late, rerank_depth=depth, progress=False)
        rows = [("hybrid 150", alone.stages["hybrid"]), ("hybrid 150 -> late 150", alone.stages["hybrid+late"]),
                (f"hybrid 150 -> cross-encoder {REFERENCE_DEPTH}", alone.stages["hybrid+rerank"]),
                (f"hybrid 150 -> late {late} -> cross-encoder {depth}", chained.stages["hybrid+late+rerank"])]
        raw[name] = {"split": split_name, "queries": alone.queries, "late_interaction": cascade.index.manifest[
            "late_interaction"], "rows": {k: {"metrics": v.metrics, "latency_ms": v.latency_ms} for k, v in rows}}
        for stages, r in rows:
            ms = r.latency_ms
            lines.append(f"| {name} | {split_name} | {stages} | " + " | ".join(f"{r.metrics[m]:.3f}" for m in metrics)
                         + f" | {ms['p50']:.1f} | {ms.get('late_p50', float('nan')):.1f} | "
                         f"{ms.get('rerank_p50', float('nan')):.1f} |".replace("nan", "—"))
    info = raw["scifact"]["late_interaction"]
    nf = raw["nfcorpus"]["late_interaction"]
    lines += ["", f"Depths chosen on dev (SciFact held-out train, {NFCORPUS_TRAIN_SAMPLE} NFCorpus train queries): "
              f"late {late} -> cross-encoder {depth}, the cheapest within {TOLERANCE} mean dev nDCG@10 of "
              f"cross-encoder {REFERENCE_DEPTH} ({mean_dev[f'{late}/{depth}']:.4f} vs {mean_dev['reference']:.4f})"
              + ("" if fits else " — none was within tolerance; the best was taken") + ".",
              f"Token vectors ({info['model']}, dim {info['dim']}, {info['dtype']}): SciFact {info['tokens']:,} tokens, "
              f"{info['bytes'] / 2**20:.0f} MiB, {info['bytes_per_passage'] / 1024:.1f} KiB per passage; NFCorpus "
              f"{nf['bytes'] / 2**20:.0f} MiB, {nf['bytes_per_passage'] / 1024:.1f} KiB per passage"
              + (" (`--late-dtype fp16` doubles that)." if info["dtype"] == "int8" else ".")]
    table = "\n".join(lines) + "\n"
    publish("late-interaction", raw, table, marker="late")
    print(table)


if __name__ == "__main__":
    main()
