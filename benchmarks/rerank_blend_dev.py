"""Dev-only study: does blending the cross-encoder's ranking with the first stage's help or hurt?

    python benchmarks/rerank_blend_dev.py [--reranker cascade-reranker] [--name rerank-blend-dev]

For each dev query (SciFact: the seeded 10% of train that `cascade train` holds out; NFCorpus: its dev
split), the hybrid top 30 is scored by the reranker once; the head is then ordered by
1/(60 + cross-encoder rank) + beta/(60 + first-stage rank) for several beta (0 = the cross-encoder alone,
the cascade's --blend 0; inf = first-stage order). Writes benchmarks/results/NAME.{json,md} (a candidate
model gets its own NAME, so the study behind the default stays as it is).
No test split is read: this is where the default blend (1) was chosen.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import DATA, RESULTS, publish

BETAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, float("inf"))


def blend(scores: np.ndarray, beta: float) -> np.ndarray:
    """The cascade's blend (cascade/rerank/blend.py); beta inf: first-stage order alone."""
    from cascade.rerank.blend import blended_scores

    first_rank = np.arange(1, len(scores) + 1)
    return -first_rank.astype(float) if beta == float("inf") else blended_scores(scores, first_rank, beta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reranker", default="cascade-reranker")
    parser.add_argument("--name", default="rerank-blend-dev", help="output file name under benchmarks/results/")
    args = parser.parse_args()

    from cascade.rerank import CrossEncoder
    from cascade.train.config import TrainConfig
    from cascade.train.dev import query_ndcg
    from cascade.train.prepare import prepare

    model = CrossEncoder(args.reranker)
    table = {}
    for name in ("scifact", "nfcorpus"):
        dev = prepare([DATA / name], TrainConfig(out=str(RESULTS)), progress=False, mine_train=False).dev
        scored = [(q, model.predict([(q.query, text) for _, text in q.candidates], batch_size=8, raw_scores=True))
                  for q in dev]
        table[name] = {"queries": len(dev), "ndcg@10": {
            str(beta): float(np.mean([query_ndcg(q, blend(s, beta)) for q, s in scored]))
            for beta in BETAS}}
    lines = ["| dev set | queries | " + " | ".join(f"beta {b:g}" for b in BETAS) + " |",
             "|---|---:|" + "---:|" * len(BETAS)]
    for name, row in table.items():
        lines.append(f"| {name} | {row['queries']} | " + " | ".join(f"{v:.4f}" for v in row["ndcg@10"].values()) + " |")
    publish(args.name, {"reranker": args.reranker, **table}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
