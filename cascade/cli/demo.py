"""`cascade demo`: index the bundled corpus and show, query by query, what reranking changed."""

from __future__ import annotations

import json
import tempfile
import textwrap
from importlib import resources
from pathlib import Path

from cascade.cli.format import format_rerank_status
from cascade.documents import load_documents
from cascade.pipeline import Cascade

SHOWN = 5


def demo_files() -> tuple[Path, Path]:
    data = resources.files("cascade") / "data"
    return Path(str(data / "demo.jsonl")), Path(str(data / "demo_queries.json"))


def run_demo(reranker: str | None = "auto", out: str | None = None, device: str | None = None) -> dict:
    """Index the demo corpus, run its queries, print before/after rankings; returns the counts shown."""
    corpus, queries_file = demo_files()
    queries = json.loads(queries_file.read_text(encoding="utf-8"))
    docs = load_documents(corpus)
    with tempfile.TemporaryDirectory(prefix="cascade-demo-") as tmp:
        cascade = Cascade.build(docs, out or tmp, reranker=reranker, device=device, source=str(corpus))
    print(f"Indexed {len(docs)} demo passages ({cascade.build_stats.seconds:.1f}s).")
    print("Each query lists the final top hits; 'first stage' is the rank hybrid BM25+dense retrieval gave it,")
    print("and * marks the passage that actually answers the query.\n")
    top1 = {"first_stage": 0, "final": 0}
    for n, q in enumerate(queries):
        # no latency budget: a loaded machine would cut reranking short, and the demo is about reranking
        result = cascade.search(q["query"], retrieve=50, rerank_depth=20, top=SHOWN, budget_ms=None)
        relevant = set(q["relevant"])
        if n == 0:
            print(format_rerank_status(result.rerank) + "\n")
        print(f"Q: {q['query']}")
        print("   final  first stage")
        for h in result.hits:
            mark = "*" if h.doc_id in relevant else " "
            text = textwrap.shorten(f"{h.title}: {h.text}", 78, placeholder=" …")
            print(f"   {h.rank:>5}  {h.stage_ranks['fusion']:>11}  {mark} {text}")
        first = min(result.hits, key=lambda h: h.stage_ranks["fusion"])
        top1["first_stage"] += first.doc_id in relevant
        top1["final"] += result.hits[0].doc_id in relevant
        print(f"   ({' · '.join(f'{k} {v:.0f} ms' for k, v in result.timings_ms.items())})\n")
    n = len(queries)
    print(f"Answer ranked first: {top1['first_stage']}/{n} queries after the first stage, "
          f"{top1['final']}/{n} after reranking.")
    if cascade.reranker is None:
        print("Reranking was unavailable, so both columns show first-stage order; pass --reranker MODEL_DIR.")
    return top1
