"""Label-free adaptation (issue 18): `cascade adapt` on a corpus alone, judged on the corpus's labelled dev split.

    python benchmarks/adapt_label_free.py [--data ../shared/data/beir/nfcorpus] [--split dev] [--work DIR]

Indexes the corpus into WORK/index, runs `cascade adapt WORK/index --out WORK/adapted --base BASE` with its
other defaults (no query or label of the corpus is read; an interrupted run resumes), then `cascade eval` on the
split for the first stage, BASE and the adapted model, blended as search runs them and alone (`--blend 0`).
BASE is `cascade-reranker`, which never read NFCorpus: the default reranker was distilled on NFCorpus train, so
it would not measure adapting to an unseen corpus.
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
    parser.add_argument("--base", default="cascade-reranker", help="the model adapt starts from (one that never "
                        "read the corpus's labels)")
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
        assert cli(["adapt", str(index), "--out", str(adapted), "--base", args.base, *resume]) == 0
    minutes = round((time.perf_counter() - start) / 60, 1)
    rows = {}
    for name, model in ((f"bundled {args.base}", args.base), ("adapted", str(adapted))):
        blended = evaluate(args.data, args.split, index, model, None, args.work / "eval.json")
        alone = evaluate(args.data, args.split, index, model, "0", args.work / "eval.json")
        rows[name] = {"first_stage": blended["hybrid"], "blended": blended["hybrid+rerank"],
                      "alone": alone["hybrid+rerank"]}
        print(name, json.dumps(rows[name]), flush=True)
    data = {"machine": machine(), "data": str(args.data), "split": args.split, "base": args.base,
            "minutes": minutes, "rows": rows, "verdict": json.loads((index / "reranker.json").read_text())}
    table = render(data)
    publish("adapt-label-free", data, table, marker="adapt-label-free")
    print(table)


def render(data: dict) -> str:
    name, rows, record = Path(data["data"]).name, data["rows"], data["verdict"]
    first = next(iter(rows.values()))["first_stage"]
    return "\n".join([
        f"`cascade adapt` on the {name} corpus alone (from `{data['base']}`, other settings default; no query or "
        f"label read), then `cascade eval` on {name} {data['split']}, nDCG@10 (hybrid first stage: {first}):", "",
        "| reranker | blended (as search runs it) | alone (`--blend 0`) |", "|---|---:|---:|",
        *[f"| {row} | {r['blended']} | {r['alone']} |" for row, r in rows.items()], "",
        f"Adapting took {data['minutes']} min here (0 when it was already done). Its own verdict, on "
        f"{record['held_out_queries']} held-out pseudo-queries: {record['verdict']}.", ""])


if __name__ == "__main__":
    main()
