"""Label-free adaptation (issue 18): `cascade adapt` on a corpus alone, judged on the corpus's labelled dev split.

    python benchmarks/adapt_label_free.py [--data ../shared/data/beir/nfcorpus] [--split dev] [--work DIR]

Indexes the corpus into WORK/index, runs `cascade adapt WORK/index --out WORK/adapted` with its defaults (no
query or label of the corpus is read; an interrupted run resumes), then `cascade eval` on the split for the
first stage, the bundled reranker and the adapted one, blended as search runs them and alone (`--blend 0`).
Writes benchmarks/results/adapt-label-free.{json,md}. About 20 min on a 2-core AMX CPU for NFCorpus.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import DATA, ROOT, machine, publish


def evaluate(data: Path, split: str, index: Path, reranker: str, blend: str | None, out: Path) -> dict:
    from cascade.cli import main

    args = ["eval", str(data), "--split", split, "--index", str(index), "--reranker", reranker,
            "--stages", "hybrid,hybrid+rerank", "--json-out", str(out), "--quiet"]
    assert main(args + (["--blend", blend] if blend is not None else [])) == 0
    stages = json.loads(out.read_text())["stages"]
    return {name: round(stage["ndcg@10"], 4) for name, stage in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "nfcorpus")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--work", type=Path, default=ROOT / "results" / "tmp" / "adapt-label-free")
    args = parser.parse_args()

    from cascade import Cascade, load_documents
    from cascade.cli import main as cli

    index, adapted = args.work / "index", args.work / "adapted"
    args.work.mkdir(parents=True, exist_ok=True)
    if not (index / "manifest.json").is_file():
        Cascade.build(load_documents(args.data), index, reranker=None, progress=True)
    start = time.perf_counter()
    if not (adapted / "model.safetensors").is_file():
        resume = ["--resume"] if (adapted / "checkpoint.pt").is_file() else []
        assert cli(["adapt", str(index), "--out", str(adapted), *resume]) == 0
    minutes = round((time.perf_counter() - start) / 60, 1)
    rows = {}
    for name, model in (("bundled cascade-reranker", "cascade-reranker"), ("adapted", str(adapted))):
        blended = evaluate(args.data, args.split, index, model, None, args.work / "eval.json")
        alone = evaluate(args.data, args.split, index, model, "0", args.work / "eval.json")
        rows[name] = {"first_stage": blended["hybrid"], "blended": blended["hybrid+rerank"],
                      "alone": alone["hybrid+rerank"]}
        print(name, json.dumps(rows[name]), flush=True)
    record = json.loads((index / "reranker.json").read_text())
    first = next(iter(rows.values()))["first_stage"]
    lines = [f"`cascade adapt` on the {args.data.name} corpus alone (defaults; no query or label read), then "
             f"`cascade eval` on {args.data.name} {args.split}, nDCG@10 (hybrid first stage: {first}):", "",
             "| reranker | blended (as search runs it) | alone (`--blend 0`) |", "|---|---:|---:|",
             *[f"| {name} | {r['blended']} | {r['alone']} |" for name, r in rows.items()], "",
             f"Adapting took {minutes} min here (0 when it was already done). Its own verdict, on "
             f"{record['held_out_queries']} held-out pseudo-queries: {record['verdict']}.", ""]
    publish("adapt-label-free", {"machine": machine(), "data": str(args.data), "split": args.split,
                                 "minutes": minutes, "rows": rows, "verdict": record}, "\n".join(lines),
            marker="adapt-label-free")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
