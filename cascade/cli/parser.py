"""The `cascade` command line: every subcommand's flags. Search settings' flags come from `SearchSettings`."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Sequence

from cascade._version import __version__
from cascade.cli.types import ann_param, budget, non_negative, port, positive, positive_float, pseudo_kinds, source_weight
from cascade.evaluate.chains import CHAIN_DEPTHS
from cascade.evaluate.chains import STAGES as EVAL_STAGES
from cascade.models.hub import DEFAULT_ENCODER
from cascade.rerank.cache import DEFAULT_TTL_S
from cascade.settings import CONTEXT_TOP, NAMES, IndexSettings, SearchSettings

EXAMPLES = """\
examples:
  cascade demo                                   # index the bundled demo corpus and search it
  cascade index ./notes --out ./idx              # .txt/.md folder, .jsonl file, or BEIR folder
  cascade search ./idx "why is p99 latency high under load?"
  cascade search ./idx "..." --reranker ./my-cross-encoder --rerank-depth 50 --json
  cascade search ./idx "..." --budget-ms 100 --cache redis://localhost:6379/0
  cascade index ./notes --out ./idx --late-interaction && cascade search ./idx "..." --stages hybrid:150,late:60,rerank:20
  cascade context ./idx "..." --max-tokens 1500 --tokenizer ./my-llm-tokenizer
  cascade eval ../shared/data/beir/scifact --split test --report scifact.md
  cascade sweep ../shared/data/beir/nfcorpus --split dev --reranker ./my-cross-encoder
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cascade", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Recall first, precision second: hybrid retrieval (BM25 + dense) gathers candidates, "
                    "a cross-encoder reranks the top few, the best hits come back with per-stage timings.")
    parser.add_argument("--version", action="version", version=f"cascade {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="build or update an index from documents",
                       description="Chunk documents into passages, build BM25 and dense indexes, and write them "
                                   "atomically. Re-running on the same source re-encodes only changed passages.")
    p.add_argument("src", help="folder of .txt/.md files, a .jsonl[.gz] file of {id|_id, title?, text}, "
                               "or a BEIR dataset folder (corpus.jsonl[.gz])")
    p.add_argument("--out", required=True, help="index directory (created, or updated in place)")
    add_index_flags(p, ("passage_words", "overlap"))
    p.add_argument("--encoder", default=None,
                   help="bi-encoder, local dir or hub id (default: sentence-transformers/all-MiniLM-L6-v2, bundled)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--late-interaction", nargs="?", const=DEFAULT_ENCODER, default=None, metavar="MODEL",
                   help="also store every passage's token vectors for the late-interaction stage (search "
                        "--late-depth), from MODEL (default: the bundled MiniLM; or a `cascade train --kind "
                        "late-interaction` folder)")
    p.add_argument("--no-late-interaction", action="store_true", help="drop stored token vectors")
    p.add_argument("--late-dtype", choices=("int8", "fp16"), default=None,
                   help="token vector storage: int8 with a scale per token (default: half the size of fp16 and "
                        "faster to score on CPU) or fp16")
    add_index_flags(p, ("shards", "ann"))
    p.add_argument("--ann-param", action="append", default=None, metavar="NAME=INT", type=ann_param,
                   help="ANN parameter, repeatable: hnsw m, ef_construction, ef_search; ivfpq nlist, pq_m, nbits, "
                        "nprobe, refine (0 = sized to the data)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="build shards as Ray tasks: a local Ray cluster, or ADDRESS (auto, ray://head:10001); "
                        "workers must see --out at the same path (pip install 'cascade-retrieval[distributed]')")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(p)

    s = sub.add_parser("search", help="search an index: hybrid retrieve -> rerank -> top hits",
                       description="Hybrid retrieve K candidates, rerank the top D with a cross-encoder, print the "
                                   "top N with each stage's score and rank and each stage's time.")
    add_query_options(s)

    c = sub.add_parser("context", help="search, then pack the best passages into a numbered context for an LLM",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run the search, drop near-duplicate passages, merge adjacent passages of one "
                                   "document, number one source per document, and pack them best first into "
                                   "--max-tokens tokens of the tokenizer you name (the first source that does not "
                                   "fit is cut at a token boundary). Prints the context, then the sources.",
                       epilog="example:\n  cascade context ./idx \"why does p99 rise under load?\" --max-tokens 1500 "
                              "--tokenizer ./my-llm-tokenizer")
    add_query_options(c, top=CONTEXT_TOP)
    c.add_argument("--max-tokens", type=positive, default=2000, metavar="T", help="token budget (default 2000)")
    c.add_argument("--tokenizer", default=None, metavar="NAME",
                   help="Hugging Face tokenizer that counts the budget: your LLM's, as a local dir or hub id "
                        "(default: the index's encoder tokenizer, an approximation)")

    d = sub.add_parser("demo", help="index the bundled demo corpus and show how reranking reorders it",
                       description="Index ~100 short passages that ship with Cascade (near-miss pairs such as "
                                   "'rate limiting reduces latency' vs 'increases latency under load') and run a few "
                                   "queries, showing first-stage ranks next to reranked ranks.")
    add_search_options(d)
    d.add_argument("--out", default=None, help="keep the demo index here (default: a temporary directory)")

    e = sub.add_parser("eval", help="score every stage on a labelled BEIR split",
                       description="Run the cascade over a BEIR split and report, per stage, nDCG@10, MRR@10, "
                                   "Recall@100, Recall@D, P@5 and per-query latency, each stage's change over the "
                                   "one before, and diagnostics in words. Documents score the max over their "
                                   "passages.", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  cascade eval ../shared/data/beir/scifact --split test --json-out scifact.json "
                              "--report scifact.md --run-dir runs/")
    add_dataset_options(e, default_split="test")
    add_setting_flags(e, ("rerank_depth", "late_depth", "llm_depth", "blend", "batch_size"), **CHAIN_DEPTHS)
    add_llm_options(e)
    e.add_argument("--stages", default=",".join(EVAL_STAGES),
                   help=f"comma-separated stages (default {','.join(EVAL_STAGES)}; hybrid+rerank is skipped with a "
                        "note when no reranker is available): bm25, dense, hybrid, or a chain hybrid+late, "
                        "hybrid+late+rerank, hybrid+rerank+llm, ... (late, rerank, llm in that order)")
    e.add_argument("--json-out", default=None, metavar="FILE", help="also write the numbers as JSON to FILE")
    e.add_argument("--run-dir", default=None, metavar="DIR", help="write one TREC run file per stage")
    e.add_argument("--report", default=None, metavar="FILE", help="write a .md or .html report with a plot")

    w = sub.add_parser("sweep", help="quality and latency against rerank depth; suggests the depth to use",
                       description="Rerank the hybrid candidates to each depth, measure nDCG@10 and rerank "
                                   "latency, and suggest the smallest depth within 0.005 nDCG@10 of the best. "
                                   "Tune on a train/dev split, not test.")
    add_dataset_options(w, default_split="dev")
    add_setting_flags(w, ("late_depth", "blend", "batch_size"))
    w.add_argument("--depths", default="10,20,30,50,100,150", help="comma-separated depths (default 10,...,150)")
    w.add_argument("--latency-queries", type=positive, default=20, help="queries timed at every depth (20)")
    w.add_argument("--out", default=None, metavar="DIR",
                   help="where sweep.md, sweep.json and sweep.png go (default: ./sweep-DATASET-SPLIT)")

    v = sub.add_parser("serve", help="HTTP service: Cohere/Jina-compatible /rerank, /search, /health, /metrics",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Serve the reranker (POST /rerank, no index needed: the Cohere/Jina rerank API) "
                                   "and, given an index, the full cascade (POST /search). Concurrent /rerank "
                                   "requests are micro-batched into shared model calls. OpenAPI docs at /docs; "
                                   "Prometheus metrics at /metrics. SIGHUP or POST /admin/reload swaps in a rebuilt "
                                   "index without dropping requests; SIGTERM finishes in-flight requests first.",
                       epilog="examples:\n  cascade serve ./idx --port 8080\n"
                              "  curl -s localhost:8080/rerank -H 'content-type: application/json' \\\n"
                              "       -d '{\"query\": \"tides\", \"documents\": [\"the moon raises tides\", \"cats\"]}'")
    v.add_argument("index", nargs="?", default=None, help="index directory for /search (optional)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=port, default=8080, help="port (default 8080)")
    v.add_argument("--api-key", default=os.environ.get("CASCADE_API_KEY"), metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on every route but /health and /ready (default: "
                        "$CASCADE_API_KEY)")
    v.add_argument("--reranker", default=None, metavar="MODEL", help="cross-encoder (default: the bundled one)")
    v.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    add_backend_flag(v)
    v.add_argument("--cache", default="memory", metavar="SPEC",
                   help="score cache for /search: memory (default), none, or redis://host:port/db")
    v.add_argument("--cache-ttl", type=positive, default=DEFAULT_TTL_S, metavar="S", help="Redis TTL (one week)")
    v.add_argument("--max-documents", type=positive, default=1000, metavar="N",
                   help="most documents one /rerank request may send (default 1000)")
    v.add_argument("--max-body-mb", type=positive_float, default=8.0, metavar="MB", help="largest request body (default 8)")
    v.add_argument("--batch-window-ms", type=float, default=5.0, metavar="MS",
                   help="how long the model thread waits to coalesce concurrent /rerank requests (default 5)")
    v.add_argument("--no-micro-batching", action="store_true", help="score each /rerank request on its own")
    v.add_argument("--tokenizer", default=None, metavar="NAME",
                   help="tokenizer /context counts its max_tokens in: your LLM's (default: the index encoder's)")
    v.add_argument("--public-docs", action="store_true",
                   help="serve /docs, /redoc and /openapi.json without the API key (by default they need it too)")
    v.add_argument("--max-queue", type=positive, default=64, metavar="N",
                   help="model-bound requests (waiting or running) past which new ones get 503 with Retry-After "
                        "instead of waiting without bound; /ready reports it (default 64)")
    v.add_argument("--max-connections", type=positive, default=None, metavar="N",
                   help="open connections past which uvicorn answers 503 at once: bounds what slow or idle clients "
                        "can hold (default: no limit)")
    v.add_argument("--read-timeout-s", type=positive_float, default=30.0, metavar="S",
                   help="a request's headers and body must arrive within S seconds of its first byte (or of the "
                        "connection opening), else 408 and the connection closes: a client sending nothing, or a "
                        "byte a minute, cannot hold a connection (default 30)")
    v.add_argument("--drain-s", type=positive, default=30, metavar="S",
                   help="on SIGTERM, how long in-flight requests may take to finish before exit (default 30)")
    v.add_argument("--no-verify", action="store_true",
                   help="at start, check only a sample of the index's files against their checksums, not every byte "
                        "(a large index starts faster; a small flaw in a large file may then go unseen)")

    i = sub.add_parser("info", help="the CPU, its speed flags, runtimes, and the device and precision models run in",
                       description="What Cascade sees on this machine and chooses from it: the CPU model and the "
                                   "flags that decide inference speed (AMX, AVX512-BF16, VNNI, AVX2), the installed "
                                   "runtimes, the device, precision and threads models get (and why), the "
                                   "cross-encoder backend measured here for each model (eager torch, or fused by "
                                   "oneDNN Graph; CASCADE_BACKEND=torch|fused forces one), and where each default "
                                   "model's weights come from. Paste it beside a figure or a bug report.",
                       epilog="example:\n  cascade info --json", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_json_flag(i)

    y = sub.add_parser("verify", help="check an index's files against the checksums written when it was built",
                       description="Re-hash every file of an index and compare with the SHA-256 recorded at build "
                                   "time: catches bytes changed on disk (a bad copy, a failing disk, an edit) that "
                                   "loading cannot see. Exit 0 when all match, 2 naming the damaged files.",
                       epilog="example:\n  cascade verify ./idx", formatter_class=argparse.RawDescriptionHelpFormatter)
    y.add_argument("index", help="index directory")
    add_json_flag(y)

    t = sub.add_parser("train", help="fine-tune a cross-encoder reranker on BEIR-style labels",
                       description="Mine hard negatives with Cascade's own hybrid first stage, fine-tune a "
                                   "cross-encoder (pointwise BCE, pairwise margin or listwise softmax), keep the "
                                   "checkpoint best on dev nDCG@10 of reranking the top 30, and write a Hugging "
                                   "Face folder with a model card. Dev: qrels/dev.tsv if present, else a seeded "
                                   "10% of the training queries.", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  cascade train ../shared/data/beir/scifact ../shared/data/beir/nfcorpus "
                              "--out ./my-reranker --epochs 2")
    t.add_argument("--base", default=None, help="starting checkpoint, path or hub id (default: bundled MiniLM-L6)")
    t.add_argument("--kind", choices=("cross-encoder", "late-interaction"), default="cross-encoder",
                   help="cross-encoder (default), or late-interaction: fine-tune the token encoder plus a linear "
                        "projection for MaxSim (use the folder with `cascade index --late-interaction DIR`)")
    t.add_argument("--late-dim", type=positive, default=None, metavar="N",
                   help="late interaction: projection size when the base has none (default 128)")
    t.add_argument("--max-positives", type=positive, default=None, metavar="N",
                   help="judged positives kept per query, best-ranked by the first stage first (all); on densely "
                        "judged data such as NFCorpus (~40 per query) this trains on the positives reranking sees")
    add_training_options(t)

    a = sub.add_parser("adapt", help="adapt a reranker to an index's own documents, with no labels",
                       description="Make pseudo-queries from the index's passages (titles, salient sentences, "
                                   "keywords; kept when the first stage finds their source), fine-tune a copy of the "
                                   "reranker on them with hard and contrast negatives, and compare first stage, "
                                   "starting model and adapted model on held-out pseudo-queries. The index records the "
                                   "winner in reranker.json, which searches then use by default; when reranking does "
                                   "not pay on this corpus it says so and records none. Resumable with --resume.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  cascade adapt ./my-index --out ./my-index-reranker\n"
                              "  cascade search ./my-index \"does caching lower tail latency?\"   # uses it")
    a.add_argument("index", help="index directory written by `cascade index`")
    a.add_argument("--out", required=True, help="adapted model folder (also holds checkpoint.pt for --resume)")
    a.add_argument("--base", default=None, help="the reranker to start from (default: the bundled cascade-reranker)")
    a.add_argument("--pseudo-queries", type=positive, default=2000, metavar="N",
                   help="pseudo-queries to make, 10%% held out to judge (2000)")
    add_writer_options(a)
    a.add_argument("--max-steps", type=positive, default=300, help="training steps (300)")
    a.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (2e-5: adapt, do not relearn)")
    a.add_argument("--batch-queries", type=positive, default=8, help="queries per step (8)")
    a.add_argument("--eval-every", type=positive, default=50, help="steps between held-out evaluations (50)")
    a.add_argument("--max-length", type=positive, default=None,
                   help="tokens per (query, passage) pair (default: what the index's passages need, the window "
                        "search reads them in: 128 for the default 80-word passages)")
    a.add_argument("--seed", type=int, default=13, help="seed for pseudo-queries, hold-out and sampling (13)")
    a.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    a.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json_flag(a)

    k = sub.add_parser("distill", help="distil a cross-encoder into a smaller, faster student",
                       description="Score every training pair once with the teacher (cached in OUT), initialise a "
                                   "student from N of the teacher's layers, and train it on the teacher's scores "
                                   "(MarginMSE or listwise KL), optionally mixed with the labels. Checkpoint choice "
                                   "and early stopping as in `cascade train`.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  cascade distill --teacher ./my-reranker --layers 3 "
                              "../shared/data/beir/scifact --out ./my-student")
    k.add_argument("--teacher", required=True, help="the trained cross-encoder to distil (path or hub id)")
    k.add_argument("--layers", type=positive, choices=(2, 3, 4), required=True, help="student layers (2, 3 or 4)")
    k.add_argument("--distill-loss", choices=("margin-mse", "kl"), default="margin-mse",
                   help="margin-mse: match the teacher's positive-negative margins; kl: its list distributions")
    k.add_argument("--label-weight", type=float, default=0.0, help="share of the label loss, 0..1 (0)")
    k.add_argument("--max-negatives", type=positive, default=15,
                   help="hardest negatives per query the teacher scores (15)")
    k.add_argument("--max-positives", type=positive, default=4,
                   help="judged positives per query the teacher scores, best-ranked first (4; NFCorpus has ~40)")
    add_training_options(k)
    return parser


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


BACKENDS = ("auto", "torch", "fused")  # cascade.models.backends.BACKENDS, named here so --help loads no torch


def add_backend_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="how models run on this CPU: torch (eager), fused (traced once, fused by oneDNN Graph), "
                        "or auto, which measures both the first time a model loads here and keeps the faster "
                        "one that ranks the same (see `cascade info`); sets CASCADE_BACKEND for this process "
                        "(default: that variable, else auto)")


def add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reranker", default=None, metavar="MODEL",
                   help="cross-encoder dir or hub id (default: the bundled cascade-reranker; without it, "
                        "cross-encoder/ms-marco-MiniLM-L-6-v2 from the local HF cache)")
    p.add_argument("--no-rerank", action="store_true", help="first stage only")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    add_backend_flag(p)
