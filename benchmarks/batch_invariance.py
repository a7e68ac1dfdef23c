"""How much batching moves scores, per precision: writes benchmarks/results/batch-invariance.{json,md}.

    python benchmarks/batch_invariance.py [--data ../shared/data/beir/scifact] [--queries 48] [--passages 5]

The same texts are scored the ways the product batches them, and every way is compared with the reference
(the index build's and the search's own batching):
  * bi-encoder passage vectors: batch 16 (reference) vs alone, a shuffled batch of 64, one thread (a Ray
    worker); the change is measured on query-passage cosines, what dense search ranks by;
  * cross-encoder logits (bundled cascade-reranker, eager and fused backends): length-sorted batches of 8
    (reference) vs alone, one shuffled micro-batch of all pairs (the server's coalescing), one thread.
Each row gives the largest change relative to max(1, |score|), the bound `cascade.models.runtime.tolerance`
states for that precision, and the rank flips: pairs of one query's passages whose order changed, split
by whether their scores were further apart than the bound (must be 0) or closer (near-ties). SciFact
train queries only; run once per precision the CPU offers (its flags are recorded).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path

import numpy as np
import torch
from _common import DATA, machine, publish

from cascade.models.runtime import MIN_REDUCED_TOKENS as MIN_TOKENS


def one_thread(fn):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def flips(ref: np.ndarray, other: np.ndarray, groups: np.ndarray, tol: float) -> tuple[int, int]:
    """(order changes between scores further apart than the bound, order changes among near-ties)."""
    far = near = 0
    for g in np.unique(groups):
        a, b = ref[groups == g], other[groups == g]
        for i in range(len(a)):
            for j in range(i + 1, len(a)):
                if np.sign(a[i] - a[j]) != np.sign(b[i] - b[j]):
                    bound = tol * max(1.0, abs(a[i]), abs(a[j]))
                    far, near = (far + 1, near) if abs(a[i] - a[j]) > 2 * bound else (far, near + 1)
    return far, near


def row(model: str, variant: str, ref: np.ndarray, other: np.ndarray, groups: np.ndarray, tol: float) -> dict:
    change = np.abs(ref - other) / np.maximum(1.0, np.abs(ref))
    far, near = flips(ref, other, groups, tol)
    return {"model": model, "variant": variant, "scores": int(len(ref)), "max_change": float(change.max()),
            "p99_change": float(np.percentile(change, 99)), "bound": tol, "flips_beyond_bound": far,
            "flips_near_ties": near}


def measure(texts: list[str], queries: list[str], per_query: int) -> tuple[str, list[dict]]:
    from cascade.models.bi_encoder import Encoder
    from cascade.models.runtime import dtype_name, tolerance
    from cascade.rerank.cross_encoder import CrossEncoder

    encoder = Encoder()
    precision = dtype_name(encoder.dtype)
    tol = tolerance(encoder.dtype)
    qv = np.stack([encoder.encode_query(q) for q in queries])  # as search encodes them: alone, fp32
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(texts))
    ref = encoder.encode(texts, batch_size=16)
    variants = {
        "alone": np.concatenate([encoder.encode([t]) for t in texts]),
        "shuffled batch 64": encoder.encode([texts[i] for i in shuffled], batch_size=64)[np.argsort(shuffled)],
        "one thread": one_thread(lambda: encoder.encode(texts, batch_size=16)),
    }
    groups = np.repeat(np.arange(len(queries)), len(texts))
    rows = [row("bi-encoder", name, (qv @ ref.T).ravel(), (qv @ v.T).ravel(), groups, tol)
            for name, v in variants.items()]

    query_ms = query_cost(encoder, queries)
    pairs = [(q, texts[(i * per_query + j) % len(texts)]) for i, q in enumerate(queries) for j in range(per_query)]
    groups = np.repeat(np.arange(len(queries)), per_query)
    order = rng.permutation(len(pairs))
    for backend in ("torch", "fused"):  # eager, and traced + fused by oneDNN Graph (cascade.models.backends)
        ce = CrossEncoder("cascade-reranker", backend=backend)
        if backend == "torch":
            cost = top_up_cost(ce, pairs)
        ref = ce.predict(pairs, batch_size=8, raw_scores=True)
        variants = {
            "alone": np.array([ce.predict([p], raw_scores=True)[0] for p in pairs]),
            "one shuffled micro-batch": ce.predict([pairs[i] for i in order], batch_size=len(pairs),
                                                   raw_scores=True)[np.argsort(order)],
            "one thread": one_thread(lambda: ce.predict(pairs, batch_size=8, raw_scores=True)),
        }
        rows += [row(f"cross-encoder ({backend})", name, ref, v, groups, tol) for name, v in variants.items()]
    return precision, rows, {**cost, **query_ms}


def query_cost(encoder, queries: list[str]) -> dict:
    """ms per query encoded alone: fp32 (what search does), and at the model's precision with and without the
    top-up (the choice `Encoder.encode_query` makes)."""
    import time

    from cascade.models import runtime as inference

    def ms(fn) -> float:
        fn(queries[0])
        start = time.perf_counter()
        for q in queries:
            fn(q)
        return (time.perf_counter() - start) * 1000 / len(queries)

    out = {"query_fp32_ms": ms(encoder.encode_query), "query_topped_up_ms": ms(lambda q: encoder.encode([q]))}
    saved = inference.MIN_REDUCED_TOKENS
    try:
        inference.MIN_REDUCED_TOKENS = 0
        out["query_alone_ms"] = ms(lambda q: encoder.encode([q]))
    finally:
        inference.MIN_REDUCED_TOKENS = saved
    return out


def top_up_cost(ce, pairs: list[tuple[str, str]], depth: int = 30, rounds: int = 3) -> dict:
    """ms to score `depth` pairs in batches of 8 (the search default), with and without the bf16 top-up:
    the best of `rounds` alternating passes, each after a pass that warms its shapes."""
    import time

    from cascade.models import runtime as inference

    def ms(min_tokens: int) -> float:
        inference.MIN_REDUCED_TOKENS = min_tokens
        start = time.perf_counter()
        for i in range(0, len(pairs) - depth + 1, depth):
            ce.predict(pairs[i:i + depth], batch_size=8, raw_scores=True)
        return (time.perf_counter() - start) * 1000 / (len(pairs) // depth)

    saved, best = inference.MIN_REDUCED_TOKENS, {"with": [], "without": []}
    try:
        for _ in range(rounds):
            for key, tokens in (("with", saved), ("without", 0)):
                ms(tokens)
                best[key].append(ms(tokens))
    finally:
        inference.MIN_REDUCED_TOKENS = saved
    return {"with_top_up_ms": min(best["with"]), "without_top_up_ms": min(best["without"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA / "scifact"))
    ap.add_argument("--queries", type=int, default=48)
    ap.add_argument("--passages", type=int, default=5, help="passages per query (cross-encoder pairs)")
    args = ap.parse_args()
    data = Path(args.data)
    train = {line.split("\t")[0] for line in (data / "qrels" / "train.tsv").read_text().splitlines()[1:]}
    queries = [q["text"] for q in map(json.loads, (data / "queries.jsonl").read_text().splitlines())
               if q["_id"] in train][: args.queries]
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [f"{d['title']} {d['text']}" for d, _ in zip(map(json.loads, f), range(args.queries * args.passages))]

    results = {}
    for setting in ("auto", "fp32"):
        os.environ["CASCADE_PRECISION"] = setting
        precision, rows, cost = measure(texts, queries, args.passages)
        results[precision] = {"rows": rows, "cost": cost}  # on a CPU without fast bf16, "auto" is fp32 and is measured once
    info = {**machine(), "threads": torch.get_num_threads()}
    lines = [f"SciFact train: {args.queries} queries x {len(texts)} passages (bi-encoder cosines), "
             f"{args.queries} x {args.passages} pairs (cross-encoder); CPU flags: {', '.join(info['flags'])}; "
             f"{info['threads']} threads. Change = |score - reference| / max(1, |reference|).\n",
             "| precision | model | batched as | max change | p99 change | bound | flips beyond 2x bound | "
             "flips among near-ties |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for precision, result in results.items():
        for r in result["rows"]:
            lines.append(f"| {precision} | {r['model']} | {r['variant']} | {r['max_change']:.2e} | "
                         f"{r['p99_change']:.2e} | {r['bound']:.1e} | {r['flips_beyond_bound']} | "
                         f"{r['flips_near_ties']} |")
    lines.append("")
    for precision, r in results.items():
        cost = r["cost"]
        if precision != "fp32":
            lines.append(f"A query encoded alone: {cost['query_fp32_ms']:.1f} ms in fp32 (what search does), "
                         f"{cost['query_topped_up_ms']:.1f} ms in {precision} topped up, "
                         f"{cost['query_alone_ms']:.1f} ms in {precision} without the top-up.")
        lines.append(f"Cross-encoder, 30 pairs in batches of 8, {precision}: {cost['with_top_up_ms']:.0f} ms"
                     + (" (fp32 calls are never topped up)." if precision == "fp32" else
                        f" with every call topped up to {MIN_TOKENS} tokens, {cost['without_top_up_ms']:.0f} ms "
                        f"without ({cost['with_top_up_ms'] / cost['without_top_up_ms']:.2f}x)."))
    table = "\n".join(lines) + "\n"
    publish("batch-invariance", {"machine": info, "results": results}, table, marker="batch-invariance")
    print(table)


if __name__ == "__main__":
    main()
