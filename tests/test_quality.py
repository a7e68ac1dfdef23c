"""Real weights on real data: the first stage must find SciFact's relevant abstracts."""

import csv

import pytest

from cascade import Cascade, load_documents


@pytest.fixture(scope="module")
def scifact_slice(scifact):
    """The first 60 test queries, their relevant abstracts, and 600 other abstracts as distractors."""
    with open(scifact / "qrels" / "test.tsv", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if int(r["score"]) > 0]
    qrels: dict[str, set[str]] = {}
    for r in rows:
        qrels.setdefault(r["query-id"], set()).add(r["corpus-id"])
    qids = sorted(qrels, key=int)[:60]
    relevant = set().union(*(qrels[q] for q in qids))
    docs = load_documents(scifact)
    keep = [d for d in docs if d.id in relevant] + [d for d in docs if d.id not in relevant][:600]
    import json

    texts = {}
    with open(scifact / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            texts[q["_id"]] = q["text"]
    return Cascade.build(keep, reranker=None), [(texts[q], qrels[q]) for q in qids]


def recall_at(cascade, queries, k, **kwargs):
    found = 0.0
    for text, rel in queries:
        hits = cascade.search(text, retrieve=k, rerank_depth=0, top=k, **kwargs).hits
        found += len({h.doc_id for h in hits} & rel) / len(rel)
    return found / len(queries)


def test_hybrid_first_stage_recall_on_scifact(scifact_slice):
    cascade, queries = scifact_slice
    hybrid = recall_at(cascade, queries, 10)
    lexical = recall_at(cascade, queries, 10, fusion="weighted", alpha=0.0)
    dense = recall_at(cascade, queries, 10, fusion="weighted", alpha=1.0)
    assert lexical > 0.85 and dense > 0.85, (lexical, dense)  # measured 0.976 and 0.950
    assert hybrid >= max(lexical, dense) - 0.02, (hybrid, lexical, dense)
