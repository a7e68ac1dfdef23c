"""Does a two-step rerank pay? The student scores all D candidates, the teacher re-scores the student's top k.

    python benchmarks/two_step_dev.py [--k 5 10 15]

Issue 19 asks for a two-step rerank stage "if it pays". This measures it before building it, on dev only
(the same queries as reranker_domains.py: SciFact's held-out 10% of train, NFCorpus dev): each query's
hybrid top 30 is scored once by the bundled student (cascade-reranker-fast) and once by the teacher
(cascade-reranker) at the window search uses; a two-step ranking is the student's order with its top k
re-sorted by the teacher. Every ranking is blended with the first stage as search blends it, and compared
with the teacher alone on the same queries (paired bootstrap). Its cost is timed per query as search would
pay it: one student call on the 30 pairs plus one teacher call on the k it re-scores.
Writes benchmarks/results/two-step-dev.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import machine, publish
from reranker_domains import DOMAINS, as_search_loads, dev_queries

MODELS = ("cascade-reranker", "cascade-reranker-fast")


def timed_scores(model, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    scores = model.predict(pairs, batch_size=32, raw_scores=True)
    return scores, (time.perf_counter() - start) * 1000


def two_step(student: np.ndarray, teacher: np.ndarray, k: int) -> np.ndarray:
    """Scores whose order is the student's, its top k re-sorted by the teacher (a rank-valued score)."""
    order = np.argsort(-student, kind="stable")
    top = order[:k][np.argsort(-teacher[order[:k]], kind="stable")]
    final = np.concatenate([top, order[k:]])
    scores = np.empty(len(student))
    scores[final] = -np.arange(len(student), dtype=np.float64)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 15], help="how many the teacher re-scores")
    args = parser.parse_args()

    from cascade.evaluate.metrics import paired_bootstrap
    from cascade.rerank.blend import blended_scores
    from cascade.settings import DEFAULT_BLEND
    from cascade.train.dev import query_ndcg

    dev = dev_queries()
    teacher, student = (as_search_loads(m) for m in MODELS)
    views = ["teacher", "student", *(f"two-step k={k}" for k in args.k)]
    ndcg = {d: {v: [] for v in views} for d in DOMAINS}
    ms = {v: [] for v in views}
    for q in dev:
        pairs = [(q.query, t) for _, t in q.candidates]
        ranks = np.arange(1, len(pairs) + 1)
        t_scores, t_ms = timed_scores(teacher, pairs)
        s_scores, s_ms = timed_scores(student, pairs)
        runs = {"teacher": (t_scores, t_ms), "student": (s_scores, s_ms)}
        for k in args.k:
            top = np.argsort(-s_scores, kind="stable")[:k]
            _, k_ms = timed_scores(teacher, [pairs[i] for i in top])  # what the second step costs
            runs[f"two-step k={k}"] = (two_step(s_scores, t_scores, k), s_ms + k_ms)
        for view, (scores, cost) in runs.items():
            ndcg[q.source][view].append(query_ndcg(q, blended_scores(np.asarray(scores), ranks, DEFAULT_BLEND)))
            ms[view].append(cost)
    rows = []
    for view in views:
        row = {"name": view, "p50_ms": round(float(np.median(ms[view])), 1)}
        for d in DOMAINS:
            delta, low, high = paired_bootstrap(ndcg[d]["teacher"], ndcg[d][view])
            row[d] = {"ndcg@10": float(np.mean(ndcg[d][view])), "vs_teacher": [delta, low, high]}
        rows.append(row)
    counts = {d: len(ndcg[d]["teacher"]) for d in DOMAINS}
    lines = [f"Dev, blended nDCG@10 (SciFact: {counts['scifact']} held-out train queries; NFCorpus: "
             f"{counts['nfcorpus']} dev queries), hybrid top 30; change against the teacher alone with its 95% "
             "bootstrap interval; p50 ms per query of the reranker calls (student on 30 + teacher on k).", "",
             "| ranking | " + " | ".join(f"{d} | {d} vs teacher" for d in DOMAINS) + " | mean | p50 ms |",
             "|---|" + "---:|---:|" * len(DOMAINS) + "---:|---:|"]
    for row in rows:
        cells = [f"{row[d]['ndcg@10']:.4f} | {row[d]['vs_teacher'][0]:+.4f} [{row[d]['vs_teacher'][1]:+.4f}, "
                 f"{row[d]['vs_teacher'][2]:+.4f}]" for d in DOMAINS]
        mean = np.mean([row[d]["ndcg@10"] for d in DOMAINS])
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {mean:.4f} | {row['p50_ms']} |")
    table = "\n".join(lines) + "\n"
    publish("two-step-dev", {"machine": machine(), "dev_queries": counts, "rows": rows}, table)
    print(table)


if __name__ == "__main__":
    main()
