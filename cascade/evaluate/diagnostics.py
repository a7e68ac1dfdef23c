"""What the evaluation numbers mean, in words: where the cascade loses quality and what to change."""

from __future__ import annotations

from cascade.evaluate.runner import EvalResult

POOL_RECALL_LOW = 0.80  # below this, the reranker mostly reorders the wrong candidates
GAIN_MEANINGFUL = 0.03  # relative nDCG@10 gain under which reranking is hard to justify
P5_RULE = 0.60  # rule of thumb: rerank when first-stage P@5 is under 60%


def first_stage(result: EvalResult) -> str | None:
    for name in ("hybrid", "bm25", "dense"):
        if name in result.stages:
            return name
    return None


def diagnose(result: EvalResult, qrels: dict[str, dict[str, int]]) -> list[str]:
    """Plain-language findings, one per line, for the report and the terminal."""
    notes = []
    k, d = result.settings["retrieve"], result.settings["rerank_depth"]
    base = first_stage(result)
    if base is None:
        return ["Only the reranked stage was evaluated; add a first stage to compare against."]
    m = result.stages[base].metrics
    pool = m[f"recall@{k}"]
    if pool < POOL_RECALL_LOW:
        notes.append(f"Candidate pool: {base} Recall@{k} = {pool:.3f}, under {POOL_RECALL_LOW:.2f}. The reranker is "
                     f"polishing bad candidates: {1 - pool:.0%} of relevant documents never reach it. Improve the "
                     "first stage (more candidates, better fusion, a domain-tuned encoder) before the reranker.")
    else:
        notes.append(f"Candidate pool: {base} Recall@{k} = {pool:.3f}; the relevant documents are in the pool, so "
                     "quality now depends on ordering them.")

    ceiling = sum(min(sum(1 for r in rels.values() if r > 0), 5) / 5 for rels in qrels.values()) / max(len(qrels), 1)
    p5 = m["p@5"]
    verdict = ("under the 60% rule of thumb, so a reranker is warranted" if p5 < P5_RULE else
               "at or over the 60% rule of thumb: the first stage is already precise, so check the rerank gain "
               "justifies its latency")
    notes.append(f"First-stage P@5 = {p5:.3f}, {verdict}. (With {ceiling * 5:.1f} relevant documents per query on "
                 f"average in the top 5 at best, P@5 cannot exceed {ceiling:.3f} on this split.)")

    if "hybrid+rerank" in result.stages and base == "hybrid":
        r = result.stages["hybrid+rerank"]
        before, after = m["ndcg@10"], r.metrics["ndcg@10"]
        gain = (after - before) / before if before else 0.0
        hq, rq = result.stages[base].per_query["ndcg@10"], r.per_query["ndcg@10"]
        helped = sum(rq[q] > hq[q] + 1e-9 for q in hq)
        hurt = sum(rq[q] < hq[q] - 1e-9 for q in hq)
        notes.append(f"Reranking changed nDCG@10 from {before:.3f} to {after:.3f} ({gain:+.1%}): it helped {helped} "
                     f"queries, hurt {hurt}, left {len(hq) - helped - hurt} equal.")
        if gain < GAIN_MEANINGFUL:
            depth_recall = m[f"recall@{d}"]
            if depth_recall < POOL_RECALL_LOW:
                cause = (f"a weak candidate pool: only {depth_recall:.0%} of relevant documents are in the top {d} "
                         "it reranks; rerank deeper or improve the first stage")
            elif gain < 0 or hurt > helped:
                cause = ("domain mismatch: with the right documents in reach it orders them worse than the first "
                         "stage; fine-tune the reranker on in-domain labels (cascade train)")
            else:
                cause = ("a model too small for this domain: it orders the pool slightly better but not by much; "
                         "try a larger or in-domain cross-encoder")
            verdict = "Reranking made nDCG@10 worse" if gain < 0 else f"Rerank gain is under {GAIN_MEANINGFUL:.0%}"
            notes.append(f"{verdict}; the numbers point to {cause}.")
    return notes
