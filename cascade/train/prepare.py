"""Read training sources into TrainData: labelled queries, pseudo-queries, dev queries, per data set.

Each data set gives up to two sources: its labels (`scifact`) and pseudo-queries over its corpus
(`pseudo:scifact`). Dev is its dev split, else a seeded 10% of its training queries; with `labels=False`
no qrels are read at all and dev is a seeded share of the pseudo-queries (label-free adaptation).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from cascade.documents import Passage
from cascade.errors import CascadeError
from cascade.evaluate.beir import load_split
from cascade.evaluate.runner import open_cascade
from cascade.pipeline import Cascade
from cascade.rerank.llm import LLMReranker
from cascade.train.config import TrainConfig, TrainData
from cascade.train.data import DevQuery, Example, candidates, dev_queries, hold_out, mine, pseudo_examples
from cascade.train.pseudo import WRITER


def prepare(datasets: Sequence[str | Path], config: TrainConfig, progress: bool = True,
            mine_train: bool = True) -> TrainData:
    """Examples and dev queries from every data set (`mine_train` False: dev only, for dev studies)."""
    if not config.labels and not config.pseudo_queries:
        raise CascadeError("without labels there is nothing to train on: give a number of pseudo-queries")
    examples, dev, sources = [], [], []
    for path in map(Path, datasets):
        cascade = open_cascade(path, None, reranker=None, progress=progress)
        pseudo = pseudo_for(cascade, config, path.name, progress) if config.pseudo_queries else []
        if config.labels:
            mined, held, note = labelled(path, cascade, config, progress, mine_train)
        else:
            pseudo, held = split_pseudo(cascade, pseudo, config, path.name)
            mined, note = [], f"seeded {config.dev_fraction:.0%} of its pseudo-queries"
        examples += mined + (pseudo if mine_train else [])
        dev += held
        sources.append({"dataset": path.name, "train_queries": len(mined), "pseudo_queries": len(pseudo),
                        "dev_queries": len(held), "dev": note})
    return TrainData(examples, dev, sources)


def labelled(path: Path, cascade: Cascade, config: TrainConfig, progress: bool,
             mine_train: bool) -> tuple[list[Example], list[DevQuery], str]:
    """Mined examples from the train qrels, and dev queries from the dev split or a seeded hold-out."""
    train = load_split(path, "train")
    if (path / "qrels" / "dev.tsv").is_file():
        dev_split = load_split(path, "dev")
        train_ids, dev_ids, note = list(train.queries), list(dev_split.queries), "dev split"
        dev_texts, dev_qrels = dev_split.queries, dev_split.qrels
    else:
        train_ids, dev_ids = hold_out(list(train.queries), config.dev_fraction, config.seed)
        dev_texts, dev_qrels, note = train.queries, train.qrels, f"seeded {config.dev_fraction:.0%} of train"
    if config.max_dev_queries and len(dev_ids) > config.max_dev_queries:
        dev_ids = sorted(random.Random(config.seed).sample(sorted(dev_ids), config.max_dev_queries))
        note += f", seeded sample of {config.max_dev_queries}"
    mined = mine(cascade, {q: train.queries[q] for q in train_ids}, train.qrels, config.mine_depth,
                 config.skip_top, config.max_negatives, config.easy_negatives, config.seed,
                 config.max_positives, progress, path.name) if mine_train else []
    held = dev_queries(cascade, {q: dev_texts[q] for q in dev_ids}, dev_qrels, config.mine_depth, progress,
                       path.name)
    return mined, held, note


def pseudo_for(cascade: Cascade, config: TrainConfig, name: str, progress: bool) -> list[Example]:
    kinds, ask = tuple(config.pseudo_kinds), None
    if config.llm_url:  # an endpoint given: its questions join the kinds that need none
        client = LLMReranker(config.llm_url, config.llm_model or "")
        kinds, ask = tuple(dict.fromkeys((*kinds, "llm"))), lambda prompt: client.complete(prompt, WRITER)
    return pseudo_examples(cascade, config.pseudo_queries, kinds, config.mine_depth, config.pseudo_keep_top,
                           config.pseudo_skip_top, config.max_negatives, config.seed, progress, f"pseudo:{name}",
                           ask)


def label_free(cascade: Cascade, config: TrainConfig, name: str, progress: bool = True) -> TrainData:
    """TrainData from one index's passages alone: pseudo-queries, a seeded share held out as dev."""
    if not config.pseudo_queries:
        raise CascadeError("label-free training needs pseudo-queries: give a number of them")
    made = pseudo_for(cascade, config, name, progress)
    examples, dev = split_pseudo(cascade, made, config, name)
    if not examples or not dev:
        raise CascadeError(f"{name}: only {len(made)} pseudo-queries survived filtering, too few to train and "
                           "hold some out; is the corpus large enough (a few hundred passages)?")
    return TrainData(examples, dev, [{"dataset": name, "train_queries": 0, "pseudo_queries": len(examples),
                                      "dev_queries": len(dev), "dev": f"seeded {config.dev_fraction:.0%} of its "
                                                                      "pseudo-queries"}])


def split_pseudo(cascade: Cascade, pseudo: list[Example], config: TrainConfig,
                 name: str) -> tuple[list[Example], list[DevQuery]]:
    """A seeded share of the pseudo-queries held out as dev queries, whose one relevant document is their
    source; the rest to train on."""
    _, dev_ids = hold_out([ex.qid for ex in pseudo], config.dev_fraction, config.seed) if pseudo else ([], [])
    dev_ids = set(dev_ids)
    held = [ex for ex in pseudo if ex.qid in dev_ids][: config.max_dev_queries]
    passages: list[Passage] = cascade.index.passages
    out = []
    for ex in held:
        pool = candidates(cascade, ex.query, config.mine_depth)
        source_doc = ex.qid.split(":", 1)[1]
        out.append(DevQuery(ex.qid, ex.query, [(passages[i].doc_id, passages[i].content) for i in pool],
                            {source_doc: 1}, f"pseudo:{name}"))
    return [ex for ex in pseudo if ex.qid not in dev_ids], out
