"""The `cascade` command line: every subcommand and its own flags; shared option groups live in `options.py`."""

from __future__ import annotations

import argparse
import os

from cascade._version import __version__
from cascade.cli.options import (
    add_backend_flag,
    add_dataset_options,
    add_index_flags,
    add_json_flag,
    add_llm_options,
    add_query_options,
    add_search_options,
    add_setting_flags,
    add_training_options,
    add_writer_options,
)
from cascade.cli.types import ann_param, port, positive, positive_float
from cascade.evaluate.chains import CHAIN_DEPTHS
from cascade.evaluate.chains import STAGES as EVAL_STAGES
from cascade.models.hub import DEFAULT_ENCODER
from cascade.rerank.cache import DEFAULT_TTL_S
from cascade.settings import CONTEXT_TOP

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
                                   "model's weights come from. Paste it beside a figure or a bug report. "
                                   "The precision (where the CPU has bf16 units) and each backend are measured once "
                                   "per machine and cached; --remeasure forgets them, e.g. after a measurement taken "
                                   "while the machine was busy.",
                       epilog="examples:\n  cascade info --json\n  cascade info --remeasure",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("--remeasure", action="store_true",
                   help="forget this machine's measured precision and backend verdicts; the next model load (and "
                        "this report's precision) measures again")
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
    a.add_argument("--base", default=None, help="the reranker to start from (default: the bundled cascade-reranker-fast)")
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
                       description="Score every training pair once with the teacher, or each of several (cached "
                                   "in OUT), initialise a student from N of the (first) teacher's layers, and train "
                                   "it on the teacher's scores "
                                   "(MarginMSE or listwise KL), optionally mixed with the labels. Checkpoint choice "
                                   "and early stopping as in `cascade train`.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  cascade distill --teacher ./my-reranker --layers 3 "
                              "../shared/data/beir/scifact --out ./my-student")
    k.add_argument("--teacher", dest="teachers", action="append", required=True, metavar="TEACHER",
                   help="the trained cross-encoder to distil (path or hub id); repeat it for an ensemble whose "
                        "standardised scores are averaged (the student starts from the first one's layers)")
    k.add_argument("--layers", type=positive, required=True,
                   help="student layers, at most the teacher's: 2-4 for a faster student; the teacher's own depth "
                        "re-learns its scores on more queries than the labels cover (self-distillation)")
    k.add_argument("--distill-loss", choices=("margin-mse", "kl"), default="margin-mse",
                   help="margin-mse: match the teacher's positive-negative margins; kl: its list distributions")
    k.add_argument("--label-weight", type=float, default=0.0, help="share of the label loss, 0..1 (0)")
    k.add_argument("--max-negatives", type=positive, default=15,
                   help="hardest negatives per query the teacher scores (15)")
    k.add_argument("--max-positives", type=positive, default=4,
                   help="judged positives per query the teacher scores, best-ranked first (4; NFCorpus has ~40)")
    add_training_options(k)
    return parser
