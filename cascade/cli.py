"""`cascade`: one entry point, one subcommand per job. Errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Sequence

from cascade._version import __version__
from cascade.errors import CascadeError
from cascade.evaluate.runner import CHAIN_DEPTHS, STAGES as EVAL_STAGES
from cascade.models import DEFAULT_ENCODER
from cascade.pipeline import CONTEXT_TOP
from cascade.retrieve.dense import ANN_KINDS
from cascade.rerank.cache import DEFAULT_TTL_S
from cascade.settings import NAMES, UNBUDGETED, SearchSettings, SettingError

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


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def ann_param(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=INTEGER, e.g. ef_search=128, got {text!r}") from None


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def budget(text: str) -> float | None:
    """Milliseconds, or none/off for no limit (its bounds are `SearchSettings`')."""
    return None if text.lower() in ("none", "off") else float(text)


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
    p.add_argument("--passage-words", type=non_negative, default=None,
                   help="passage length in words; 0 keeps documents whole (default: previous index's, else 200)")
    p.add_argument("--overlap", type=non_negative, default=None,
                   help="words shared by consecutive passages (default: previous index's, else 40)")
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
    p.add_argument("--shards", type=positive, default=None,
                   help="split the corpus into S shards of whole documents; searches fan out and merge, BM25 uses "
                        "global statistics so results equal an unsharded index's (default: previous index's, else 1)")
    p.add_argument("--ann", choices=("auto",) + ANN_KINDS, default=None,
                   help="dense search per shard: flat (exact scan), hnsw (graph), ivfpq (compressed, re-scored "
                        "exactly); auto: flat below 100k passages per shard, else hnsw (default: previous index's)")
    p.add_argument("--ann-param", action="append", default=None, metavar="NAME=INT", type=ann_param,
                   help="ANN parameter, repeatable: hnsw m, ef_construction, ef_search; ivfpq nlist, pq_m, nbits, "
                        "nprobe, refine (0 = sized to the data)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="build shards as Ray tasks: a local Ray cluster, or ADDRESS (auto, ray://head:10001); "
                        "workers must see --out at the same path (pip install 'cascade-retrieval[distributed]')")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

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
                       epilog="example:\n  cascade eval ../shared/data/beir/scifact --split test --json scifact.json "
                              "--report scifact.md --run-dir runs/")
    add_dataset_options(e, default_split="test")
    add_setting_flags(e, ("rerank_depth", "late_depth", "llm_depth", "blend", "batch_size"), **CHAIN_DEPTHS)
    add_llm_options(e)
    e.add_argument("--stages", default=",".join(EVAL_STAGES),
                   help=f"comma-separated stages (default {','.join(EVAL_STAGES)}; hybrid+rerank is skipped with a "
                        "note when no reranker is available): bm25, dense, hybrid, or a chain hybrid+late, "
                        "hybrid+late+rerank, hybrid+rerank+llm, ... (late, rerank, llm in that order)")
    e.add_argument("--json", dest="json_out", default=None, metavar="FILE", help="write the numbers as JSON")
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
    v.add_argument("--port", type=positive, default=8080, help="port (default 8080)")
    v.add_argument("--api-key", default=os.environ.get("CASCADE_API_KEY"), metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on every route but /health (default: $CASCADE_API_KEY)")
    v.add_argument("--reranker", default=None, metavar="MODEL", help="cross-encoder (default: the bundled one)")
    v.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    v.add_argument("--cache", default="memory", metavar="SPEC",
                   help="score cache for /search: memory (default), none, or redis://host:port/db")
    v.add_argument("--cache-ttl", type=positive, default=DEFAULT_TTL_S, metavar="S", help="Redis TTL (one week)")
    v.add_argument("--max-documents", type=positive, default=1000, metavar="N",
                   help="most documents one /rerank request may send (default 1000)")
    v.add_argument("--max-body-mb", type=float, default=8.0, metavar="MB", help="largest request body (default 8)")
    v.add_argument("--batch-window-ms", type=float, default=5.0, metavar="MS",
                   help="how long the model thread waits to coalesce concurrent /rerank requests (default 5)")
    v.add_argument("--no-micro-batching", action="store_true", help="score each /rerank request on its own")
    v.add_argument("--tokenizer", default=None, metavar="NAME",
                   help="tokenizer /context counts its max_tokens in: your LLM's (default: the index encoder's)")

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
    p.add_argument("--seed", type=int, default=13, help="seed for sampling, hold-out and initialisation (13)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--save-dtype", choices=("fp32", "bf16"), default="fp32",
                   help="weights on disk; bf16 halves the folder and loads back as fp32 (fp32)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_dataset_options(p: argparse.ArgumentParser, default_split: str) -> None:
    p.add_argument("data", help="BEIR folder: corpus.jsonl[.gz], queries.jsonl, qrels/SPLIT.tsv")
    p.add_argument("--split", default=default_split, help=f"qrels split to use (default {default_split})")
    add_setting_flags(p, ("retrieve", "fusion", "alpha"))
    p.add_argument("--queries", type=positive, default=None, metavar="N", help="only the first N judged queries")
    p.add_argument("--index", default=None, metavar="DIR",
                   help="index to build or refresh for the corpus (default: a cache folder per dataset)")
    p.add_argument("--passage-words", type=non_negative, default=None, help="passage length in words (200)")
    p.add_argument("--overlap", type=non_negative, default=None, help="passage overlap in words (40)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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


def settings_from(args: argparse.Namespace, base: SearchSettings | None = None, stages: str | None = None,
                  **changes) -> SearchSettings:
    """The search settings the flags ask for, over `base`; `stages` (`--stages hybrid:150,rerank:20`) sets
    every depth at once. A bad setting is one line naming its flag."""
    values = {name: getattr(args, name) for name in NAMES if hasattr(args, name)} | changes
    try:
        if stages:
            depths = {"retrieve", "late_depth", "rerank_depth", "llm_depth"}
            return SearchSettings.from_stages(stages, **{k: v for k, v in values.items() if k not in depths})
        return (base or SearchSettings()).replace(**values)
    except SettingError as e:
        raise CascadeError(e.render(flag)) from None


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
    s.add_argument("--json", action="store_true", help="print one JSON object instead of text")


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


def llm_reranker(args: argparse.Namespace):
    """The LLM stage the flags ask for, or None."""
    if not args.llm_url:
        if args.llm_model:
            raise CascadeError("--llm-model needs --llm-url")
        return None
    from cascade.rerank.llm import LLMReranker

    return LLMReranker(args.llm_url, args.llm_model or "", window=args.llm_window, step=args.llm_step,
                       timeout_s=args.llm_timeout, api_key_env=args.llm_key_env)


def add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reranker", default=None, metavar="MODEL",
                   help="cross-encoder dir or hub id (default: the bundled cascade-reranker; without it, "
                        "cross-encoder/ms-marco-MiniLM-L-6-v2 from the local HF cache)")
    p.add_argument("--no-rerank", action="store_true", help="first stage only")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")


def reranker_spec(args: argparse.Namespace) -> str | None:
    if args.no_rerank and args.reranker:
        raise CascadeError("--no-rerank and --reranker contradict each other; pick one")
    return None if args.no_rerank else (args.reranker or "auto")


def cmd_index(args: argparse.Namespace) -> None:
    from cascade import Cascade
    from cascade.runners import RayRunner
    from cascade.documents import iter_documents

    if args.late_interaction and args.no_late_interaction:
        raise CascadeError("--late-interaction and --no-late-interaction contradict each other; pick one")
    late = False if args.no_late_interaction else args.late_interaction
    runner = RayRunner(None if args.ray == "local" else args.ray) if args.ray else None
    cascade = Cascade.build(iter_documents(args.src), args.out, encoder=args.encoder, reranker=None,
                            passage_words=args.passage_words, overlap=args.overlap, device=args.device,
                            source=os.path.abspath(args.src), progress=not args.quiet, late_interaction=late,
                            late_dtype=args.late_dtype, shards=args.shards, ann=args.ann,
                            ann_params=dict(args.ann_param) if args.ann_param else None, runner=runner)
    st = cascade.build_stats
    m = cascade.index.manifest
    kinds = sorted({a["kind"] for a in m["ann"]})
    print(f"indexed {st.documents} documents as {st.passages} passages into {args.out} in {st.seconds:.1f}s "
          f"(encoded {st.encoded}, reused {st.reused}, removed {st.removed}; {len(m['shards'])} shard(s), "
          f"dense search {'/'.join(kinds)})")
    info = cascade.index.manifest.get("late_interaction")
    if info:
        print(f"late interaction: {info['tokens']} token vectors ({info['model']}, dim {info['dim']}, {info['dtype']}), "
              f"{info['bytes'] / 2**20:.1f} MiB, {info['bytes_per_passage'] / 1024:.1f} KiB per passage")


def cmd_search(args: argparse.Namespace) -> None:
    from cascade.cli_format import format_result

    engine, settings = open_for_query(args)
    result = engine.search(args.query, settings)
    if args.json:
        out = result.to_dict()
        for hit in out["hits"]:
            hit.pop("text")
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(format_result(result))


def open_for_query(args: argparse.Namespace):
    """(engine, search settings) for `search` and `context`, failing on bad flags before models load."""
    from cascade import Cascade
    from cascade.pipeline import check_query
    from cascade.rerank.cache import open_cache

    check_query(args.query)
    settings = settings_from(args, stages=args.stages, **({"rerank_depth": 0} if args.no_rerank else {}))
    if args.no_rerank:  # --stages sets the depths itself
        settings = settings.replace(rerank_depth=0)
    llm = llm_reranker(args)
    cache = open_cache(args.cache, ttl_s=args.cache_ttl)  # a bad spec fails before models load
    spec = reranker_spec(args)  # also refuses --no-rerank with --reranker
    reranker = spec if settings.rerank_depth else None  # no model to load for a stage that does not run
    engine = Cascade.load(args.index, reranker=reranker, device=args.device, cache=cache, llm=llm)
    return engine, settings


def cmd_context(args: argparse.Namespace) -> None:
    engine, settings = open_for_query(args)
    context = engine.context(args.query, max_tokens=args.max_tokens, tokenizer=args.tokenizer, settings=settings)
    if args.json:
        print(json.dumps(context.to_dict(), ensure_ascii=False))
        return
    print(context.text)
    print(f"\n-- {len(context.sources)} sources, {context.tokens}/{context.max_tokens} tokens ({context.tokenizer})")
    for source in context.sources:
        cut = ", cut to fit" if source.truncated else ""
        print(f"[{source.number}] {source.doc_id} (passages {', '.join(source.passage_ids)}{cut})")
    over = [d["id"] for d in context.dropped if d["reason"] == "over the token budget"]
    for d in context.dropped:
        if d["id"] not in over:
            print(f"dropped {d['id']}: {d['reason']}")
    if over:
        print(f"{len(over)} more hits did not fit the budget (first: {', '.join(over[:3])})")


def cmd_demo(args: argparse.Namespace) -> None:
    from cascade.demo import run_demo

    run_demo(reranker=reranker_spec(args), out=args.out, device=args.device)


def open_dataset(args: argparse.Namespace, reranker: str | None, late_interaction: bool | None = None):
    from pathlib import Path

    from cascade.evaluate.beir import load_split
    from cascade.evaluate.runner import open_cascade

    split = load_split(args.data, args.split)  # fail on a bad split before indexing anything
    cascade = open_cascade(Path(args.data), Path(args.index) if args.index else None, reranker,
                           device=args.device, passage_words=args.passage_words, overlap=args.overlap,
                           progress=not args.quiet, late_interaction=late_interaction)
    return split, cascade


def cmd_eval(args: argparse.Namespace) -> None:
    from cascade.evaluate.diagnostics import diagnose
    from cascade.evaluate.report import eval_json, plot_stages, stage_table, write_json, write_report, write_runs
    from cascade.evaluate.runner import chain, evaluate, parse_stages

    stages = parse_stages(args.stages)
    explicit = args.stages != ",".join(EVAL_STAGES)
    reranked = [s for s in stages if "rerank" in (chain(s) or ())]
    if reranked and args.no_rerank:
        if explicit:
            raise CascadeError(f"--no-rerank contradicts --stages {','.join(reranked)}")
        stages = [s for s in stages if s not in reranked]
    uses = {link for s in stages for link in chain(s) or ()}
    # a chain's late/llm depth only where a chain has that stage; no budget: evaluation numbers are exact
    settings = settings_from(args, UNBUDGETED, **{f"{s}_depth": 0 for s in ("late", "llm") if s not in uses})
    llm = llm_reranker(args)
    if "llm" in uses and llm is None:
        raise CascadeError("an llm stage needs --llm-url and --llm-model")
    split, cascade = open_dataset(args, reranker_spec(args) if "rerank" in uses else None,
                                  late_interaction=True if "late" in uses else None)
    cascade.llm = llm
    if reranked and cascade.reranker is None and not explicit:
        print(f"note: skipping hybrid+rerank: rerank unavailable ({cascade.rerank_unavailable})")
        stages = [s for s in stages if s not in reranked]
    result = evaluate(cascade, split, stages, settings, limit=args.queries, progress=not args.quiet)
    notes = diagnose(result, {q: split.qrels[q] for q in list(split.queries)[: result.queries]})
    table = stage_table(result)
    title = f"{result.dataset} / {result.split}: {result.queries} queries"
    print(f"{title} (retrieve {settings.retrieve}, rerank depth {settings.rerank_depth}, reranker "
          f"{result.settings['reranker'] or 'none'})\n")
    print(table)
    recall = result.settings.get("ann_recall@200")
    if recall is not None:
        print(f"\nANN ({result.settings['ann'][0]['kind']}) Recall@200 against exact search: {recall:.3f}")
    print("\n".join(f"- {n}" for n in notes))
    if args.json_out:
        write_json(args.json_out, eval_json(result, notes))
    if args.run_dir:
        write_runs(result, args.run_dir)
    if args.report:
        from pathlib import Path

        plot = plot_stages(result, Path(args.report).with_suffix(".png"))
        write_report(args.report, title, [("Results by stage", table),
                                          ("Diagnostics", "\n".join(f"- {n}" for n in notes))], plot)


def cmd_sweep(args: argparse.Namespace) -> None:
    from pathlib import Path

    from cascade.evaluate.report import plot_sweep, sweep_table, write_json, write_report
    from cascade.evaluate.sweep import parse_depths, sweep

    depths = parse_depths(args.depths)
    settings = settings_from(args, UNBUDGETED, rerank_depth=0)  # the rerank depths are what is swept
    if depths[-1] > settings.retrieve:
        raise CascadeError(f"depth {depths[-1]} exceeds --retrieve {settings.retrieve}")
    if args.no_rerank:
        raise CascadeError("a rerank depth sweep needs a reranker; drop --no-rerank")
    split, cascade = open_dataset(args, reranker_spec(args), late_interaction=True if settings.late_depth else None)
    result = sweep(cascade, split, depths, settings, limit=args.queries, latency_queries=args.latency_queries,
                   progress=not args.quiet)
    out = Path(args.out or f"sweep-{result.dataset}-{result.split}")
    table = sweep_table(result)
    advice = (f"Suggested rerank depth: {result.suggested} (smallest within {result.settings['tolerance']} nDCG@10 "
              f"of the best, {result.best}).")
    best_ndcg = max(row["ndcg@10"] for row in result.rows)
    if best_ndcg <= result.baseline["ndcg@10"]:
        advice += (f" But no depth beats the first stage alone (nDCG@10 {result.baseline['ndcg@10']:.3f}): "
                   "this reranker hurts on this data; fix or fine-tune it before choosing a depth.")
    print(table + "\n" + advice)
    write_json(out / "sweep.json", result.to_dict())
    plot = plot_sweep(result, out / "sweep.png")
    write_report(out / "sweep.md", f"{result.dataset} / {result.split}: rerank depth sweep",
                 [("Quality and latency by depth", table), ("Suggestion", f"- {advice}")], plot)
    print(f"wrote {out}/sweep.md, sweep.json, sweep.png")


def training_config(args: argparse.Namespace, **extra):
    """A TrainConfig from the parsed flags of the same names; `extra` overrides them."""
    import shlex
    from dataclasses import fields

    from cascade.train.trainer import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**{**given, "command": shlex.join(["cascade", *args.argv]), **extra})


def run_training(args: argparse.Namespace, config, teacher: str | None = None) -> None:
    from cascade.train.trainer import Trainer, prepare

    trainer = Trainer
    if getattr(args, "kind", "cross-encoder") == "late-interaction":
        from cascade.train.late import LateTrainer

        trainer = LateTrainer

    data = prepare(args.data, config, progress=not args.quiet)
    if teacher:
        from cascade.train.distill import score_with_teacher

        score_with_teacher(data.examples, teacher, args.out, device=args.device, max_length=args.max_length,
                           progress=not args.quiet)
    result = trainer(config, data).run(progress=not args.quiet)
    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; best dev nDCG@10 {result.best_dev_ndcg:.4f} "
          f"at step {result.best_step} (first stage {result.first_stage_dev_ndcg:.4f}); model in {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from cascade.models import DEFAULT_ENCODER

    run_training(args, training_config(args, base=args.base or DEFAULT_ENCODER))


def cmd_serve(args: argparse.Namespace) -> None:
    from pathlib import Path

    from cascade.serve import require_serve_extra

    require_serve_extra()
    import uvicorn

    from cascade import Cascade
    from cascade.rerank import load_reranker
    from cascade.rerank.cache import open_cache
    from cascade.serve.app import ServeConfig, create_app

    if args.max_body_mb <= 0 or args.batch_window_ms < 0:
        raise CascadeError("--max-body-mb must be > 0 and --batch-window-ms >= 0")
    cache = open_cache(args.cache, ttl_s=args.cache_ttl)
    choice = load_reranker(args.reranker, device=args.device)
    if choice.reranker is None:
        raise CascadeError(f"no reranker to serve: {choice.reason}")
    engine = Cascade.load(args.index, reranker=choice.reranker, device=args.device, cache=cache) if args.index else None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"cascade: warning: serving on {args.host} without --api-key: anyone who can reach this port can use "
              "it", file=sys.stderr)
    config = ServeConfig(index=Path(args.index) if args.index else None, api_key=args.api_key or None,
                         max_documents=args.max_documents, max_body_bytes=int(args.max_body_mb * 2**20),
                         micro_batching=not args.no_micro_batching, batch_window_ms=args.batch_window_ms,
                         tokenizer=args.tokenizer)
    app = create_app(choice.reranker, engine, config)
    print(f"cascade: serving {choice.reranker.model_id}"
          f"{f' and {args.index}' if args.index else ''} on http://{args.host}:{args.port} (docs at /docs)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)


def cmd_distill(args: argparse.Namespace) -> None:
    from cascade.models import resolve

    teacher = resolve(args.teacher)
    config = training_config(args, base=teacher)
    run_training(args, config, teacher=teacher)


COMMANDS = {"index": cmd_index, "search": cmd_search, "context": cmd_context, "demo": cmd_demo, "eval": cmd_eval,
            "sweep": cmd_sweep, "train": cmd_train, "distill": cmd_distill, "serve": cmd_serve}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in trained models' cards
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)  # some libraries set their own loggers to DEBUG
    handler.setFormatter(logging.Formatter("cascade: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    try:
        COMMANDS[args.command](args)
    except CascadeError as e:
        print(f"cascade: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cascade: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so in one line; CASCADE_DEBUG=1 shows the traceback
        if os.environ.get("CASCADE_DEBUG"):
            raise
        print(f"cascade: internal error: {type(e).__name__}: {e} (set CASCADE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
