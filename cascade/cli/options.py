"""Option groups the `cascade` subcommands share: training, datasets, settings, queries, models, LLMs.

Kept apart from `parser.py` (which lays out the subcommands) so each stays one concept; importing either loads
no model code, so `--help` and `--version` stay instant.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Sequence

from cascade.cli.types import budget, fraction, non_negative, positive, pseudo_kinds, source_weight
from cascade.rerank.cache import DEFAULT_TTL_S
from cascade.settings import NAMES, IndexSettings, SearchSettings


def add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="+", help="BEIR folders with qrels/train.tsv (and qrels/dev.tsv if they have one)")
    p.add_argument("--out", required=True, help="output model folder (also holds checkpoint.pt for --resume)")
    p.add_argument("--loss", choices=("listwise", "margin", "bce"), default="listwise",
                   help="label loss: listwise softmax over 1 positive + N negatives, pairwise margin, or pointwise "
                        "BCE (listwise)")
    p.add_argument("--negatives", type=positive, default=7,
                   help="negatives per query and step, drawn from its hard (and easy) pool (7)")
    p.add_argument("--batch-queries", type=positive, default=8, help="queries per step (8)")
    p.add_argument("--grad-accum", type=positive, default=1, help="gradient accumulation steps (1)")
    p.add_argument("--lr", type=float, default=3e-5, help="peak learning rate, linear warm-up and decay (3e-5)")
    p.add_argument("--head-lr", type=float, default=None,
                   help="learning rate of the pooler and classifier (default: 1e-3 when the base has no trained "
                        "head, as a bi-encoder base has not; else --lr)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training queries (1)")
    p.add_argument("--max-steps", type=positive, default=None, help="stop after this many steps")
    p.add_argument("--max-length", type=positive, default=256, help="tokens per (query, passage) pair (256)")
    p.add_argument("--eval-every", type=positive, default=50, help="steps between dev evaluations (50)")
    p.add_argument("--max-dev-queries", type=positive, default=None, metavar="N",
                   help="evaluate on a seeded sample of N dev queries per dataset (default: all)")
    p.add_argument("--dev-fraction", type=fraction, default=0.1, metavar="F",
                   help="share of a data set's training queries held out as dev when it has no dev qrels (0.1): "
                        "more makes checkpoint and model choices less noisy (SciFact's 10%%, 81 queries, cannot "
                        "resolve a 0.01 change) at the cost of training queries")
    p.add_argument("--patience", type=positive, default=4, help="evaluations without improvement before stopping (4)")
    p.add_argument("--skip-top", type=non_negative, default=0,
                   help="skip the top N first-stage candidates when mining negatives (likely unjudged positives)")
    p.add_argument("--easy-negatives", type=non_negative, default=0,
                   help="random corpus passages added to each query's pool of hard negatives (0)")
    p.add_argument("--pseudo-queries", type=non_negative, default=0, metavar="N",
                   help="also make up to N pseudo-queries per data set from its corpus, no labels read: titles, "
                        "salient sentences (inverse cloze) and keywords, kept when the first stage finds their "
                        "source, with hard and contrast negatives (0: none)")
    p.add_argument("--pseudo-kinds", type=pseudo_kinds, default=("title", "cloze", "keywords"), metavar="KINDS",
                   help="comma-separated kinds of pseudo-query (title,cloze,keywords; llm with --llm-url)")
    add_writer_options(p)
    p.add_argument("--pseudo-keep-top", type=positive, default=20, metavar="N",
                   help="keep a pseudo-query only if the first stage ranks its source in its top N (20)")
    p.add_argument("--pseudo-skip-top", type=non_negative, default=3, metavar="N",
                   help="pseudo-query hard negatives start below the first stage's top N (3)")
    p.add_argument("--no-labels", dest="labels", action="store_false",
                   help="read no qrels: train on pseudo-queries and choose the checkpoint on held-out ones "
                        "(label-free adaptation to a corpus; needs --pseudo-queries)")
    p.add_argument("--source-weight", dest="source_weights", type=source_weight, action="append", default=[],
                   metavar="NAME=W", help="sampling weight of a source, e.g. nfcorpus=0.5 or pseudo:scifact=2 "
                                          "(repeatable; every source 1 by default)")
    p.add_argument("--seed", type=int, default=13, help="seed for sampling, hold-out and initialisation (13)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--save-dtype", choices=("fp32", "bf16"), default="fp32",
                   help="weights on disk; bf16 halves the folder and loads back as fp32 (fp32)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars, and no line per dev evaluation (what a log gets instead of bars)")
    add_json_flag(p)


def add_dataset_options(p: argparse.ArgumentParser, default_split: str) -> None:
    p.add_argument("data", help="BEIR folder: corpus.jsonl[.gz], queries.jsonl, qrels/SPLIT.tsv")
    p.add_argument("--split", default=default_split, help=f"qrels split to use (default {default_split})")
    add_setting_flags(p, ("retrieve", "fusion", "alpha"))
    p.add_argument("--queries", type=positive, default=None, metavar="N", help="only the first N judged queries")
    p.add_argument("--index", default=None, metavar="DIR",
                   help="index to build or refresh for the corpus (default: a cache folder per dataset)")
    add_index_flags(p, ("passage_words", "overlap"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json_flag(p)
    add_search_options(p)


def flag(name: str) -> str:
    """A setting's command-line flag: `rerank_depth` -> `--rerank-depth`."""
    return "--" + name.replace("_", "-")


def add_setting_flags(p: argparse.ArgumentParser, names: Sequence[str] = NAMES, **defaults) -> None:
    """One flag per search setting in `names`, with `SearchSettings`' default (or `defaults`), help and
    choices; its bounds are checked when the settings are built (`settings_from`), in one place."""
    for f in dataclasses.fields(SearchSettings):
        if f.name not in names:
            continue
        meta, default = f.metadata, defaults.get(f.name, f.default)
        shown = "none" if default is None else f"{default:g}" if isinstance(default, float) else default
        kwargs = {"choices": meta["choices"]} if meta["choices"] else {
            "metavar": meta["metavar"], "type": budget if f.name == "budget_ms" else type(f.default)}
        p.add_argument(flag(f.name), dest=f.name, default=default, help=f"{meta['help']} (default {shown})", **kwargs)


def add_index_flags(p: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """One flag per index setting in `names`, with `IndexSettings`' help and choices; unset, an update keeps the
    existing index's value. Bounds are checked where the settings are built, in one place."""
    for f in dataclasses.fields(IndexSettings):
        if f.name in names:
            meta = f.metadata
            kwargs = {"choices": meta["choices"]} if meta["choices"] else {"metavar": meta["metavar"],
                                                                          "type": type(f.default)}
            p.add_argument(flag(f.name), dest=f.name, default=None,
                           help=f"{meta['help']} (default: the existing index's, else {f.default})", **kwargs)


def add_query_options(s: argparse.ArgumentParser, **defaults) -> None:
    """What `search` and `context` share: the index, the query and every setting of the search."""
    s.add_argument("index", help="index directory written by `cascade index`")
    s.add_argument("query", help="the question or keywords")
    add_search_options(s)
    add_setting_flags(s, **defaults)
    s.add_argument("--cache", default="memory", metavar="SPEC",
                   help="reranker score cache: memory (in-process LRU, default), none, or redis://host:port/db to "
                        "share scores across processes and restarts (pip install 'cascade-retrieval[redis]')")
    s.add_argument("--cache-ttl", type=positive, default=DEFAULT_TTL_S, metavar="S",
                   help="seconds a score lives in Redis (default one week)")
    add_llm_options(s)
    s.add_argument("--stages", default=None, metavar="SPEC",
                   help="all depths at once, e.g. hybrid:150,late:60,rerank:20,llm:10 (a stage left out does not "
                        "run); overrides --retrieve, --late-depth, --rerank-depth and --llm-depth")
    add_json_flag(s)


def add_json_flag(p: argparse.ArgumentParser) -> None:
    """`--json` means one thing on every command that prints a result: that result as one JSON object on
    stdout, instead of text (progress and notes go to stderr)."""
    p.add_argument("--json", action="store_true", help="print the result as one JSON object instead of text")


def add_writer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm-url", default=None, metavar="URL",
                   help="an OpenAI-compatible endpoint that also writes pseudo-queries, one question per passage "
                        "(InPars style; kind llm), e.g. http://localhost:8000/v1")
    p.add_argument("--llm-model", default=None, metavar="NAME", help="model name the endpoint serves")


def add_llm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm-url", default=None, metavar="URL",
                   help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM, llama.cpp, OpenAI)")
    p.add_argument("--llm-model", default=None, metavar="NAME", help="model name the endpoint serves")
    p.add_argument("--llm-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the API key (default OPENAI_API_KEY; unset = no key)")
    p.add_argument("--llm-window", type=positive, default=20, help="passages per LLM call (20)")
    p.add_argument("--llm-step", type=positive, default=10, help="how far the window slides up each call (10)")
    p.add_argument("--llm-timeout", type=float, default=30.0, metavar="S",
                   help="seconds per LLM call; on timeout or error the previous order is kept, marked degraded (30)")


BACKENDS = ("auto", "torch", "fused", "openvino")  # cascade.models.backends.BACKENDS, named here so --help loads no torch


def add_backend_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="how models run on this CPU: torch (eager), fused (traced once, fused by oneDNN Graph), "
                        "openvino (int8, quantised once on demo text and cached; needs the openvino extra), "
                        "or auto, which measures them the first time a model loads here and keeps the fastest "
                        "that ranks the same (see `cascade info`); sets CASCADE_BACKEND for this process "
                        "(default: that variable, else auto)")


def add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reranker", default=None, metavar="MODEL",
                   help="cross-encoder dir or hub id (default: the bundled cascade-reranker-fast; without it, "
                        "cross-encoder/ms-marco-MiniLM-L-6-v2 from the local HF cache)")
    p.add_argument("--no-rerank", action="store_true", help="first stage only")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    add_backend_flag(p)
