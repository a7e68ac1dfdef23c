"""Dev-only: would fusing scores beat the rank blend search uses (issue 18: "revisit the blend")?

    python benchmarks/fusion_dev.py [--reranker NAME]

On each dev set (SciFact's held-out train queries, NFCorpus dev), the default reranker scores the hybrid top 30
once. The head is then ordered by the rank blend, 1/(60 + reranker rank) + beta/(60 + first-stage rank)
(`cascade.rerank.blend`), or by a score-level fusion: the reranker's logits, standardised over the head, plus w
times a standardised first-stage score. That score is the RRF score, BM25 and dense averaged, or dense alone. The
rule, set before the run: a fusion replaces the rank blend only if it gains more than 0.005 nDCG@10 on the mean
over domains and loses in neither. Writes benchmarks/results/fusion-dev.{json,md}. No test split is read.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import DATA, machine, publish
from default_reranker_dev import dev_split

DEPTH = 30
GAIN = 0.005
WEIGHTS = (0.5, 1.0, 1.5, 2.0)


def standard(x: np.ndarray) -> np.ndarray:
    spread = x.std()
    return (x - x.mean()) / (spread if spread > 0 else 1.0)


def candidates(cascade, text: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fused order and, for its head, the reranker's logits and each first-stage score (a passage missing
    from a retriever's list gets that list's lowest score)."""
    r = cascade.run_stages(text, retrieve=150, rerank_depth=DEPTH, blend=0)
    head = r.fusion[0][:DEPTH].tolist()
    logits = dict(zip(*(a.tolist() for a in r.heads["rerank"])))

    def lookup(ids, scores):
        found = dict(zip(ids.tolist(), scores.tolist()))
        return np.array([found.get(i, min(found.values(), default=0.0)) for i in head])

    return r.fusion[0], {"ce": np.array([logits[i] for i in head]), "rrf": np.asarray(r.fusion[1][:DEPTH], float),
                         "bm25": lookup(*r.bm25), "dense": lookup(*r.dense)}


def orderings() -> dict:
    from cascade.rerank.blend import blended_scores

    ranks = np.arange(1, DEPTH + 1)
    ways = {f"rank blend, beta {b:g}": (lambda s, b=b: blended_scores(s["ce"], ranks, b)) for b in (0.5, 1, 2)}
    for w in WEIGHTS:
        ways[f"scores, w {w:g} x RRF"] = lambda s, w=w: standard(s["ce"]) + w * standard(s["rrf"])
        ways[f"scores, w {w:g} x (BM25 + dense)/2"] = \
            lambda s, w=w: standard(s["ce"]) + w * (standard(s["bm25"]) + standard(s["dense"])) / 2
        ways[f"scores, w {w:g} x dense"] = lambda s, w=w: standard(s["ce"]) + w * standard(s["dense"])
    return ways


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reranker", default=None, help="cross-encoder (default: search's default)")
    args = parser.parse_args()

    from cascade.evaluate.metrics import mean, per_query
    from cascade.evaluate.runner import RUN_DEPTH, doc_run, open_cascade

    ways, table, reranker = orderings(), {}, None
    for name in ("scifact", "nfcorpus"):
        cascade = open_cascade(DATA / name, None, args.reranker or "auto", progress=False)  # fitted as search does
        reranker = cascade.reranker.model_id
        queries, qrels = dev_split(name)
        scored = {q: candidates(cascade, text) for q, text in queries.items()}
        table[name] = {"queries": len(queries)}
        for way, fn in ways.items():
            runs = {}
            for q, (fused, s) in scored.items():
                head = fused[:DEPTH][np.argsort(-fn(s), kind="stable")]
                order = np.concatenate([head, fused[DEPTH:]]).astype(np.int64)
                runs[q] = doc_run(cascade.index.passages, order, -np.arange(len(order), dtype=float), RUN_DEPTH)
            table[name][way] = round(mean(per_query(runs, qrels, ["ndcg@10"])["ndcg@10"]), 4)
        print(name, table[name], flush=True)
    names = list(table)
    base = "rank blend, beta 1"
    mean_of = {way: sum(table[n][way] for n in names) / len(names) for way in ways}
    wins = [w for w in ways if mean_of[w] > mean_of[base] + GAIN and all(table[n][w] >= table[n][base] for n in names)]
    lines = [f"Ordering the reranked head (top {DEPTH}) on dev with `{reranker}`: nDCG@10. The first row is what "
             "search does.", "",
             "| ordering | " + " | ".join(f"{n} ({table[n]['queries']} q)" for n in names) + " | mean |",
             "|---|" + "---:|" * (len(names) + 1)]
    for way in sorted(ways, key=lambda w: w != base):
        lines.append(f"| {way} | " + " | ".join(f"{table[n][way]:.4f}" for n in names) + f" | {mean_of[way]:.4f} |")
    lines += ["", f"Rule: replace the rank blend only for a gain over {GAIN} on the mean and no loss in either domain. "
              + (f"Passed: {', '.join(wins)}." if wins else "None passed: search keeps the rank blend."), ""]
    publish("fusion-dev", {"machine": machine(), "reranker": reranker, "table": table, "mean": mean_of,
                           "passed": wins}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
