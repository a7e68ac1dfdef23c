"""What packing `/context` costs as `top` grows: counting each source once against re-counting the whole text.

    python benchmarks/context_pack.py [--tops 100,200,400,1000] [--max-tokens 1000000]

The first `top` SciFact abstracts (as search hits, best first) are packed under a budget large enough to hold
them all, two ways in the same run: `exact` counts the whole growing context for every source added (what
`/context` did before: quadratic), `summed` counts each source once and adds (what it does now, with one exact
count at the end). Both must give the same text (checked). Writes benchmarks/results/context-pack.{json,md}
and the README table.
"""

from __future__ import annotations

import argparse
import time

from _common import DATA, machine, publish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tops", default="100,200,400,1000")
    parser.add_argument("--max-tokens", type=int, default=1_000_000)
    args = parser.parse_args()

    from cascade.context import Span, Tokenizer, _pack, group
    from cascade.documents import load_documents
    from cascade.models.hub import DEFAULT_ENCODER

    tops = [int(t) for t in args.tops.split(",")]
    docs = [d for d, _ in zip(load_documents(DATA / "scifact"), range(max(tops)))]
    spans = [Span(d.id, d.id, d.title, d.text, 0) for d in docs]
    tokenizer = Tokenizer(DEFAULT_ENCODER)
    rows = []
    for top in tops:
        documents, _ = group(spans[:top])
        row = {"top": top}
        texts = {}
        for way, exact in (("exact", True), ("summed", False)):
            start = time.perf_counter()
            context = _pack("q", documents, args.max_tokens, tokenizer, exact)
            row[f"{way}_s"] = round(time.perf_counter() - start, 3)
            texts[way] = context.text
            row["tokens"] = context.tokens
        assert texts["exact"] == texts["summed"], f"top {top}: the two packings differ"
        rows.append(row)
        print(row, flush=True)
    lines = [f"Packing the top N SciFact abstracts into one context (budget {args.max_tokens:,} tokens, "
             "MiniLM tokenizer); same text both ways.\n", "| top | tokens | re-count whole text (before) | "
             "count each source once (now) |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['top']} | {r['tokens']:,} | {r['exact_s']:.2f} s | {r['summed_s']:.2f} s |" for r in rows]
    publish("context-pack", {"machine": machine(), "max_tokens": args.max_tokens, "rows": rows},
            "\n".join(lines) + "\n", marker="context-pack")


if __name__ == "__main__":
    main()
