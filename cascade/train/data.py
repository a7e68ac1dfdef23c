"""Training data from labels and our own first stage: positives, hard negatives, dev candidate lists.

Hard negatives are what the hybrid first stage ranks highly but the labels do not mark relevant, so
the reranker learns exactly the distinctions the cascade asks of it. `skip_top` leaves out the very
top candidates, which are often relevant but unjudged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from cascade.errors import CascadeError
from cascade.pipeline import Cascade
from cascade.train.pseudo import KINDS, Ask, filtered, pseudo_queries


@dataclass
class Example:
    qid: str
    query: str
    positives: list[str]  # passage texts
    negatives: list[str]
    teacher: dict[str, float] = field(default_factory=dict)  # passage text -> teacher score (distillation)
    grades: list[int] = field(default_factory=list)  # each positive's graded label (empty: all 1)
    source: str = ""  # the data set or pseudo-query pool it came from: sampling weights and dev are per source

    def grade(self, i: int) -> int:
        return self.grades[i] if self.grades else 1


@dataclass
class DevQuery:
    qid: str
    query: str
    candidates: list[tuple[str, str]]  # (doc id, passage text), first-stage order
    rels: dict[str, int]
    source: str = ""


def hold_out(qids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split of `qids` into (train, dev) when a dataset has no dev qrels."""
    shuffled = sorted(qids)
    random.Random(seed).shuffle(shuffled)
    n_dev = max(1, round(len(shuffled) * fraction))
    return sorted(shuffled[n_dev:]), sorted(shuffled[:n_dev])


def candidates(cascade: Cascade, query: str, depth: int) -> list[int]:
    """The hybrid first stage's top `depth` passages: what the reranker will see at search time."""
    return cascade.run_stages(query, retrieve=depth, rerank_depth=0).fusion[0].tolist()


def mine(cascade: Cascade, queries: dict[str, str], qrels: dict[str, dict[str, int]], depth: int = 30,
         skip_top: int = 0, max_negatives: int | None = None, easy: int = 0, seed: int = 0,
         max_positives: int | None = None, progress: bool = True, source: str = "") -> list[Example]:
    """One Example per query with at least one positive and one hard negative (the hardest first), then
    `easy` random passages: against hard negatives alone a fresh head gets almost no signal at first.
    Positives keep their graded labels (NFCorpus: 2 above 1)."""
    passages = cascade.index.passages
    rng = random.Random(seed)
    by_doc: dict[str, int] = {}
    for i, p in enumerate(passages):
        by_doc.setdefault(p.doc_id, i)
    examples = []
    for qid, text in tqdm(queries.items(), desc="mining hard negatives", unit="q", disable=not progress):
        relevant = {d for d, r in qrels.get(qid, {}).items() if r > 0}
        pool = candidates(cascade, text, depth)
        best: dict[str, int] = {}
        for i in pool:  # best-ranked passage of each relevant document in the pool
            if passages[i].doc_id in relevant:
                best.setdefault(passages[i].doc_id, i)
        # relevant but missed by the first stage: its first passage (sorted: set order differs between processes)
        for doc in sorted(relevant - best.keys()):
            if doc in by_doc:
                best[doc] = by_doc[doc]
        negatives = [passages[i].content for i in pool[skip_top:] if passages[i].doc_id not in relevant][:max_negatives]
        if negatives and easy:
            drawn = (passages[i] for i in rng.sample(range(len(passages)), min(len(passages), 4 * easy)))
            negatives += [p.content for p in drawn if p.doc_id not in relevant and p.content not in negatives][:easy]
        if best and negatives:
            chosen = list(best.items())[:max_positives]  # best-ranked first
            examples.append(Example(qid, text, [passages[i].content for _, i in chosen], negatives,
                                    grades=[qrels[qid][doc] for doc, _ in chosen], source=source))
    if not examples:
        raise CascadeError("no training examples: no query has both a judged positive and a hard negative")
    return examples


def dev_queries(cascade: Cascade, queries: dict[str, str], qrels: dict[str, dict[str, int]], depth: int = 30,
                progress: bool = True, source: str = "") -> list[DevQuery]:
    passages = cascade.index.passages
    out = []
    for qid, text in tqdm(queries.items(), desc="dev candidates", unit="q", disable=not progress):
        pool = candidates(cascade, text, depth)
        out.append(DevQuery(qid, text, [(passages[i].doc_id, passages[i].content) for i in pool], qrels[qid],
                            source))
    return out


def pseudo_examples(cascade: Cascade, count: int, kinds: tuple[str, ...] = KINDS, depth: int = 30,
                    keep_top: int = 20, skip_top: int = 3, max_negatives: int | None = None, seed: int = 13,
                    progress: bool = True, source: str = "", ask: Ask | None = None) -> list[Example]:
    """Examples from `count` pseudo-queries over the index's own passages (no labels read), consistency-
    filtered by the first stage, which also supplies their hard negatives (pseudo.py says how). `ask`: the
    LLM that writes the `llm` kind."""
    passages = cascade.index.passages
    made = pseudo_queries(passages, count, kinds, seed, ask)
    kept = filtered(made, passages, lambda q: candidates(cascade, q, depth), keep_top, skip_top, progress)
    return [Example(f"{pq.kind}:{pq.doc_id}", pq.query, [pq.positive], negatives[:max_negatives], source=source)
            for pq, negatives in kept]
