"""Dev-only: how deep should search rerank by default, with the default reranker?

    python benchmarks/depth_dev.py [--depths 10,20,30,50,100]

`cascade sweep` (cascade.evaluate.sweep) on each dev set: SciFact's held-out train queries (the ones
`cascade train` keeps for dev) and NFCorpus dev. The default blend is used and there is no budget. It reports
nDCG@10 and the rerank stage's p50 ms at each depth, and the mean over both domains. The rule, set before the
run: keep the default depth unless a deeper one gains more than 0.005 on that mean. Writes
benchmarks/results/depth-dev.{json,md}. No test split is read.
"""

from __future__ import annotations

import argparse

from _common import DATA, machine, publish
from default_reranker_dev import dev_split

GAIN = 0.005  # what a deeper default must add to the mean over domains to be worth its time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="10,20,30,50,100")
    args = parser.parse_args()

    from cascade.evaluate.beir import Split
    from cascade.evaluate.runner import open_cascade
    from cascade.evaluate.sweep import parse_depths, sweep
    from cascade.settings import SearchSettings

    depths, default = parse_depths(args.depths), SearchSettings().rerank_depth
    results = {}
    for name in ("scifact", "nfcorpus"):
        cascade = open_cascade(DATA / name, None, "auto", progress=False)  # the default reranker, fitted as search does
        queries, qrels = dev_split(name)
        split = Split(name, DATA / name, "dev", queries, qrels)
        results[name] = sweep(cascade, split, depths, progress=False).to_dict()
        print(name, results[name]["depths"], flush=True)
    names = list(results)
    mean = {d: sum(next(r["ndcg@10"] for r in results[n]["depths"] if r["depth"] == d) for n in names) / len(names)
            for d in depths}
    deeper = [d for d in depths if d > default and mean[d] > mean[default] + GAIN]
    chosen = min(deeper) if deeper else default
    reranker = results[names[0]]["settings"]["reranker"]
    lines = [f"Rerank depth on dev with the default reranker `{reranker}` (default blend, no budget): nDCG@10, "
             "and in brackets the rerank stage's p50 ms. First stage = depth 0.", "",
             "| depth | " + " | ".join(f"{n} ({results[n]['queries']} q)" for n in names) + " | mean |",
             "|---:|" + "---:|" * (len(names) + 1),
             "| 0 | " + " | ".join(f"{results[n]['first_stage']['ndcg@10']:.4f}" for n in names) + " | "
             + f"{sum(results[n]['first_stage']['ndcg@10'] for n in names) / len(names):.4f} |"]
    for d in depths:
        cells = [next(r for r in results[n]["depths"] if r["depth"] == d) for n in names]
        lines.append(f"| {d} | " + " | ".join(f"{c['ndcg@10']:.4f} ({c['latency_ms']['p50']:.0f})" for c in cells)
                     + f" | {mean[d]:.4f} |")
    lines += ["", f"Rule: a deeper default must gain more than {GAIN} on the mean over domains over depth {default}. "
              f"Depth chosen: **{chosen}**" + (" (the default stays)." if chosen == default else "."), ""]
    publish("depth-dev", {"machine": machine(), "results": results, "mean": mean, "chosen": chosen},
            "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
