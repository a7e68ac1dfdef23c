"""Passages that fit the reranker: passage length and the cross-encoder's token window, chosen together on dev.

    python benchmarks/passage_window_dev.py [--model cascade-reranker] [--name passage-window-dev]

85% of SciFact's passages at the former default length (200 words) are longer than the reranker's 256-token
window, so it never reads their tails, and the window sets its cost: attention grows with its square, the rest
linearly. This indexes each dev corpus at several passage lengths (`--passage-words`, overlap a fifth of it)
and, for each, reranks every dev query's hybrid top D at several windows (`max_length`), D chosen so that
shorter passages can also be read deeper for the same tokens. Each row: dev nDCG@10 per domain of the first
stage, the reranker alone and blended (what search runs), and the cross-encoder's p50 ms per query at the
search's batch size, all in one run. Dev sets only: SciFact's seeded 10% of train that `cascade train` holds
out (the bundled model never trained on them), NFCorpus dev (a domain it never saw). The rule: the fastest
configuration within 0.005 of the best mean blended nDCG@10. Its choice is the default now (80 words, overlap
16; `IndexSettings.pair_tokens` fits the window to them). Writes benchmarks/results/NAME.{json,md} and the
README table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import DATA, machine, publish

DOMAINS = ("scifact", "nfcorpus")
# (passage words, cross-encoder max_length, rerank depth): the former default first, then shorter passages read
# in a shorter window, at the same depth and deeper.
CONFIGS = ((200, 256, 30), (200, 128, 30), (120, 256, 30), (120, 192, 30), (120, 160, 30), (120, 160, 45),
           (80, 256, 30), (80, 192, 30), (80, 128, 30), (80, 128, 45), (80, 128, 60))
TOLERANCE = 0.005


def dev_sets(words: int, depth: int) -> dict[str, list]:
    """Each domain's dev queries with their hybrid top `depth` passages, from an index at `words` per passage."""
    from cascade.evaluate.beir import load_split
    from cascade.evaluate.runner import open_cascade
    from cascade.settings import IndexSettings
    from cascade.train.config import TrainConfig
    from cascade.train.data import dev_queries, hold_out

    out, config = {}, TrainConfig(out="unused")
    for name in DOMAINS:
        path = DATA / name
        index = None if words == IndexSettings().passage_words else \
            Path.home() / ".cache" / "cascade" / "passage-window" / f"{name}-{words}"
        cascade = open_cascade(path, index, None, passage_words=words, overlap=words // 5, progress=False)
        if (path / "qrels" / "dev.tsv").is_file():
            split = load_split(path, "dev")
            ids = list(split.queries)
        else:
            split = load_split(path, "train")
            ids = hold_out(list(split.queries), config.dev_fraction, config.seed)[1]
        out[name] = dev_queries(cascade, {q: split.queries[q] for q in ids}, split.qrels, depth, False, name)
    return out


def measure(model: str, max_length: int, dev: dict[str, list], depth: int, batch_size: int) -> dict:
    """Dev views per domain and the cross-encoder's ms per query, reranking each query's top `depth`."""
    from cascade.rerank import CrossEncoder
    from cascade.train.dev import dev_report

    scorer, ms, domains = CrossEncoder(model, max_length=max_length), [], {}
    for name, queries in dev.items():
        cut = [replace(q, candidates=q.candidates[:depth]) for q in queries]
        for q in cut:
            start = time.perf_counter()
            scorer.predict([(q.query, t) for _, t in q.candidates], batch_size=batch_size, raw_scores=True)
            ms.append((time.perf_counter() - start) * 1000)
        domains[name] = dev_report(scorer, cut, batch_size=batch_size)[name]
    return {"domains": domains, "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "mean_blended": float(np.mean([domains[d]["blended"] for d in DOMAINS]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cascade-reranker", help="cross-encoder (default: the bundled one)")
    parser.add_argument("--name", default="passage-window-dev", help="output name under benchmarks/results/")
    args = parser.parse_args()

    from cascade.settings import SearchSettings

    batch_size, rows = SearchSettings().batch_size, []
    for words in dict.fromkeys(w for w, _, _ in CONFIGS):
        dev = dev_sets(words, max(d for w, _, d in CONFIGS if w == words))
        for _, max_length, depth in (c for c in CONFIGS if c[0] == words):
            row = {"passage_words": words, "max_length": max_length, "depth": depth,
                   **measure(args.model, max_length, dev, depth, batch_size)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    best = max(r["mean_blended"] for r in rows)
    chosen = min((r for r in rows if r["mean_blended"] >= best - TOLERANCE), key=lambda r: r["p50_ms"])
    lines = [f"Dev nDCG@10 of `{args.model}` by passage length and token window (SciFact: held-out train queries; "
             "NFCorpus: dev), each query's hybrid top D passages reranked; blended = what search runs. p50: the "
             f"cross-encoder's ms per query at batch {batch_size}, same run. Chosen (fastest within {TOLERANCE} of "
             f"the best mean blended): **{chosen['passage_words']} words, max_length {chosen['max_length']}, D "
             f"{chosen['depth']}**.\n",
             "| passage words | max_length | D | " + " | ".join(f"{d} first stage | {d} alone | {d} blended"
                                                       for d in DOMAINS) + " | mean blended | p50 ms |",
             "|---:|---:|---:|" + "---:|---:|---:|" * len(DOMAINS) + "---:|---:|"]
    for r in rows:
        cells = " | ".join(f"{r['domains'][d]['first_stage']:.4f} | {r['domains'][d]['alone']:.4f} | "
                           f"{r['domains'][d]['blended']:.4f}" for d in DOMAINS)
        lines.append(f"| {r['passage_words']} | {r['max_length']} | {r['depth']} | {cells} | "
                     f"{r['mean_blended']:.4f} | {r['p50_ms']} |")
    table = "\n".join(lines) + "\n"
    publish(args.name, {"machine": machine(), "model": args.model, "rows": rows, "chosen": chosen}, table,
            marker="passage-window")
    print(table)


if __name__ == "__main__":
    main()
