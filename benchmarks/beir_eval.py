"""Regenerate the README's quality table from scratch on the BEIR data in ../shared/data/beir.

    python benchmarks/beir_eval.py [--rerankers MODEL,MODEL] [--keep-indexes DIR]

SciFact is scored on its test split; NFCorpus on dev (its test split is withheld here). Each dataset is
indexed from its corpus with Cascade's defaults, every first stage is evaluated, then hybrid top-150 ->
rerank top-30 per reranker (default: the bundled cascade-reranker), with the default blend of reranker and
first-stage ranks and with blend 0 (the reranker's order alone). The raw JSON (with
diagnostics) is written to benchmarks/results/beir-<dataset>-<split>.json beside the table
(benchmarks/results/beir.md), which is also spliced into README.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import DATA, RESULTS, splice_readme

from cascade.fileio import atomic_write
from cascade.models.hub import BUNDLED_RERANKERS

RUNS = (("scifact", "test"), ("nfcorpus", "dev"))
# Published nDCG@10 reference points (BEIR paper, Thakur et al. 2021; Pyserini BEIR regressions; SBERT docs).
PUBLISHED = {("scifact", "bm25"): "0.665 (ES) / 0.672 (Pyserini)", ("scifact", "dense"): "0.645",
             ("scifact", "hybrid+rerank"): "0.688 (BM25 + ms-marco-MiniLM-L-6-v2)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rerankers", default=",".join(BUNDLED_RERANKERS),
                        help="comma-separated cross-encoders for the hybrid+rerank rows ('' for none; default: "
                             "the bundled ones)")
    parser.add_argument("--keep-indexes", type=Path, default=None, help="build indexes here instead of a temp dir")
    args = parser.parse_args()

    from cascade.evaluate.beir import load_split
    from cascade.evaluate.diagnostics import diagnose
    from cascade.evaluate.report import eval_json, label, write_json
    from cascade.evaluate.runner import evaluate, open_cascade
    from cascade.pipeline import Cascade, index_pair_tokens
    from cascade.rerank import CrossEncoder, RerankerChoice
    from cascade.settings import DEFAULT_BLEND

    names = [name for name in args.rerankers.split(",") if name.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cascade-beir-") as tmp:
        for name, split_name in RUNS:
            data = DATA / name
            split = load_split(data, split_name)
            first = open_cascade(data, (args.keep_indexes or Path(tmp)) / name, None)
            result = evaluate(first, split, ["bm25", "dense", "hybrid"])
            raw = {"first_stage": eval_json(result, diagnose(result, split.qrels))}
            stages = dict(result.stages)
            # as search loads them: the window fitted to the index's passages
            rerankers = [CrossEncoder(n, fit=index_pair_tokens(first.index.manifest)) for n in names]
            for model in rerankers:  # same index, same candidates: only the reranker and the blend differ
                for blend, tag in ((DEFAULT_BLEND, ""), (0.0, ", blend 0")):
                    reranked = evaluate(Cascade(first.index, first.encoder, RerankerChoice(model), cache=None), split,
                                        ["hybrid", "hybrid+rerank"], blend=blend)
                    raw[model.model_id + tag] = eval_json(reranked, diagnose(reranked, split.qrels))
                    stages[f"hybrid+rerank ({model.model_id}{tag})"] = reranked.stages["hybrid+rerank"]
            write_json(RESULTS / f"beir-{name}-{split_name}.json", raw)
            for stage, r in stages.items():
                rows.append((name, split_name, stage, r, PUBLISHED.get((name, stage.split(" (")[0]), "")))

    metrics = ["ndcg@10", "mrr@10", "recall@100", "p@5"]
    lines = ["| dataset | split | stage | " + " | ".join(map(label, metrics)) + " | p50 ms | published nDCG@10 |",
             "|---|---|---|" + "---:|" * (len(metrics) + 1) + "---|"]
    for name, split_name, stage, r, published in rows:
        lines.append(f"| {name} | {split_name} | {stage} | " + " | ".join(f"{r.metrics[m]:.3f}" for m in metrics)
                     + f" | {r.latency_ms['p50']:.1f} | {published} |")
    lines += ["", "Cross-encoder alone, p50 ms per query at rerank depth 30 (same candidates, same run): "
              + "; ".join(f"{name} {stage.split(' (')[1][:-1]} {r.latency_ms['rerank_p50']:.0f}"
                          for name, _, stage, r, _ in rows if "rerank_p50" in r.latency_ms and "blend 0" not in stage)
              + "."] if names else []
    table = "\n".join(lines) + "\n"
    atomic_write(RESULTS / "beir.md", table)
    splice_readme("beir", table)
    print(table)


if __name__ == "__main__":
    main()
