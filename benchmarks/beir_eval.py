"""Regenerate the README's quality table from scratch on the BEIR data in ../shared/data/beir.

    python benchmarks/beir_eval.py [--reranker MODEL] [--keep-indexes DIR]

SciFact is scored on its test split; NFCorpus on dev (its test split is withheld here). Each dataset is
indexed from its corpus with Cascade's defaults, every stage is evaluated, and the raw JSON (with
diagnostics) is written to benchmarks/results/beir-<dataset>-<split>.json beside the table
(benchmarks/results/beir.md), which is also spliced into README.md. Without --reranker the
hybrid+rerank row is left out (no cross-encoder ships yet).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "beir"
RUNS = (("scifact", "test"), ("nfcorpus", "dev"))
# Published nDCG@10 reference points (BEIR paper, Thakur et al. 2021; Pyserini BEIR regressions; SBERT docs).
PUBLISHED = {("scifact", "bm25"): "0.665 (ES) / 0.672 (Pyserini)", ("scifact", "dense"): "0.645",
             ("scifact", "hybrid+rerank"): "0.688 (BM25 + ms-marco-MiniLM-L-6-v2)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reranker", default=None, help="cross-encoder for the hybrid+rerank stage")
    parser.add_argument("--keep-indexes", type=Path, default=None, help="build indexes here instead of a temp dir")
    args = parser.parse_args()

    from cascade.evaluate.beir import load_split
    from cascade.evaluate.diagnostics import diagnose
    from cascade.evaluate.report import eval_json, label, write_json
    from cascade.evaluate.runner import STAGES, evaluate, open_cascade

    stages = list(STAGES) if args.reranker else [s for s in STAGES if s != "hybrid+rerank"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cascade-beir-") as tmp:
        for name, split_name in RUNS:
            data = DATA / name
            split = load_split(data, split_name)
            cascade = open_cascade(data, (args.keep_indexes or Path(tmp)) / name, args.reranker or None)
            result = evaluate(cascade, split, stages)
            notes = diagnose(result, split.qrels)
            write_json(RESULTS / f"beir-{name}-{split_name}.json", eval_json(result, notes))
            for stage, r in result.stages.items():
                rows.append((name, split_name, stage, r, PUBLISHED.get((name, stage), "")))

    metrics = ["ndcg@10", "mrr@10", "recall@100", "p@5"]
    lines = ["| dataset | split | stage | " + " | ".join(map(label, metrics)) + " | p50 ms | published nDCG@10 |",
             "|---|---|---|" + "---:|" * (len(metrics) + 1) + "---|"]
    for name, split_name, stage, r, published in rows:
        lines.append(f"| {name} | {split_name} | {stage} | " + " | ".join(f"{r.metrics[m]:.3f}" for m in metrics)
                     + f" | {r.latency_ms['p50']:.1f} | {published} |")
    table = "\n".join(lines) + "\n"
    (RESULTS / "beir.md").write_text(table)
    splice_readme("beir", table)
    print(table)


def splice_readme(marker: str, table: str) -> None:
    """Replace the README block between <!-- MARKER:start --> and <!-- MARKER:end --> with `table`."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    readme.write_text(f"{head}{start}\n{table}{end}{rest.split(end, 1)[1]}", encoding="utf-8")


if __name__ == "__main__":
    main()
