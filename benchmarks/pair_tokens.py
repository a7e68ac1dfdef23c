"""What assembling pairs from token ids saves at query time, against handing the tokenizer the pairs.

    python benchmarks/pair_tokens.py [--queries 20] [--depth 30]

For each of `--queries` SciFact train queries, its hybrid-sized list of `--depth` SciFact passages is turned
into cross-encoder inputs three ways, in the same run: the tokenizer given the pairs (what Cascade did
before), pairs.py with a cold passage cache (every passage tokenised, once), and pairs.py warm (a served
corpus after first use). All three produce identical token ids (checked here). Also: a 600 KB query, the
old way and the new. Writes benchmarks/results/pair-tokens.{json,md} and the README table.
"""

from __future__ import annotations

import argparse
import time

from _common import DATA, machine, publish

SCIFACT = DATA / "scifact"


def ms(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--depth", type=int, default=30)
    args = parser.parse_args()

    from cascade.documents import load_documents
    from cascade.evaluate.beir import load_split
    from cascade.rerank import CrossEncoder
    from cascade.rerank.pairs import PairTokens

    model = CrossEncoder("cascade-reranker", warm_up=False)
    docs = [d for d in load_documents(SCIFACT)]
    queries = list(load_split(SCIFACT, "train").queries.values())[: args.queries]
    lists = [[f"{d.title} {d.text}" for d in docs[k * args.depth:(k + 1) * args.depth]] for k in range(len(queries))]

    def old(q, texts):
        return model.tokenizer([q] * len(texts), texts, truncation="longest_first", max_length=model.max_length)

    cold, warm, before = [], [], []
    for q, texts in zip(queries, lists):
        pairs = [(q, t) for t in texts]
        fresh = PairTokens(model.tokenizer, model.max_length)
        cold.append(ms(lambda: (fresh.cache.clear(), fresh.features(pairs)), 1))
        warm.append(ms(lambda: fresh.features(pairs), 5))
        before.append(ms(lambda: old(q, texts), 3))
        built, reference = fresh.features(pairs)[0], old(q, texts)
        assert all(built[k] == reference[k] for k in reference), "assembled pairs differ from the tokenizer's"
    huge = "tides and the moon " * 30_000  # 600 KB
    huge_old = ms(lambda: old(huge, lists[0][:1]), 1)
    huge_new = ms(lambda: PairTokens(model.tokenizer, model.max_length).features([(huge, lists[0][0])]), 1)
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    result = {"machine": machine(),
              "queries": len(queries), "depth": args.depth,
              "ms_per_list": {"tokenizer_pairs": median(before), "ids_cold": median(cold), "ids_warm": median(warm)},
              "ms_600kb_query": {"tokenizer_pairs": huge_old, "ids": huge_new}}
    r = result["ms_per_list"]
    table = (f"Cross-encoder inputs for one query's {args.depth} SciFact passages, median of {len(queries)} queries "
             f"(CPU flags: {', '.join(result['machine']['flags'])}):\n\n"
             "| tokenizer given the pairs (before) | ids, passages not yet cached | ids, passages cached |\n"
             "|---:|---:|---:|\n"
             f"| {r['tokenizer_pairs']:.2f} ms | {r['ids_cold']:.2f} ms | {r['ids_warm']:.2f} ms |\n\n"
             f"A 600 KB query with one passage: {huge_old:.0f} ms before, {huge_new:.1f} ms now.\n")
    publish("pair-tokens", result, table, marker="pair-tokens")
    print(table)


if __name__ == "__main__":
    main()
