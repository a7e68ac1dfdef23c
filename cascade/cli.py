"""`cascade`: one entry point, one subcommand per job. Errors are one line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

from cascade.errors import CascadeError

EXAMPLES = """\
examples:
  cascade demo                                   # index the bundled demo corpus and search it
  cascade index ./notes --out ./idx              # .txt/.md folder, .jsonl file, or BEIR folder
  cascade search ./idx "why is p99 latency high under load?"
  cascade search ./idx "..." --reranker ./my-cross-encoder --rerank-depth 50 --json
"""


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cascade", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Recall first, precision second: hybrid retrieval (BM25 + dense) gathers candidates, "
                    "a cross-encoder reranks the top few, the best hits come back with per-stage timings.")
    parser.add_argument("--version", action="version", version=f"cascade {_version()}")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("search", help="search an index: hybrid retrieve -> rerank -> top hits",
                       description="Hybrid retrieve K candidates, rerank the top D with a cross-encoder, print the "
                                   "top N with each stage's score and rank and each stage's time.")
    s.add_argument("index", help="index directory written by `cascade index`")
    s.add_argument("query", help="the question or keywords")
    add_search_options(s)
    s.add_argument("--retrieve", type=positive, default=150, metavar="K", help="first-stage candidates (default 150)")
    s.add_argument("--rerank-depth", type=non_negative, default=30, metavar="D",
                   help="candidates the cross-encoder rescores; 0 = first stage only (default 30)")
    s.add_argument("--top", type=positive, default=8, metavar="N", help="hits to return (default 8)")
    s.add_argument("--fusion", choices=("rrf", "weighted"), default="rrf",
                   help="rrf: reciprocal rank fusion (default); weighted: min-max normalised score sum")
    s.add_argument("--alpha", type=float, default=0.5, help="dense weight for --fusion weighted (default 0.5)")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    d = sub.add_parser("demo", help="index the bundled demo corpus and show how reranking reorders it",
                       description="Index ~100 short passages that ship with Cascade (near-miss pairs such as "
                                   "'rate limiting reduces latency' vs 'increases latency under load') and run a few "
                                   "queries, showing first-stage ranks next to reranked ranks.")
    add_search_options(d)
    d.add_argument("--out", default=None, help="keep the demo index here (default: a temporary directory)")
    return parser


def add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reranker", default=None, metavar="MODEL",
                   help="cross-encoder dir or hub id (default: bundled model, else "
                        "cross-encoder/ms-marco-MiniLM-L-6-v2 from the local HF cache)")
    p.add_argument("--no-rerank", action="store_true", help="first stage only")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cascade-retrieval")
    except PackageNotFoundError:
        return "unknown"


def reranker_spec(args: argparse.Namespace) -> str | None:
    if args.no_rerank and args.reranker:
        raise CascadeError("--no-rerank and --reranker contradict each other; pick one")
    return None if args.no_rerank else (args.reranker or "auto")


def cmd_index(args: argparse.Namespace) -> None:
    from cascade import Cascade, load_documents

    docs = load_documents(args.src)
    cascade = Cascade.build(docs, args.out, encoder=args.encoder, reranker=None, passage_words=args.passage_words,
                            overlap=args.overlap, device=args.device, source=os.path.abspath(args.src),
                            progress=not args.quiet)
    st = cascade.build_stats
    print(f"indexed {st.documents} documents as {st.passages} passages into {args.out} in {st.seconds:.1f}s "
          f"(encoded {st.encoded}, reused {st.reused}, removed {st.removed})")


def cmd_search(args: argparse.Namespace) -> None:
    from cascade import Cascade
    from cascade.cli_format import format_result
    from cascade.pipeline import check_query

    check_query(args.query)  # fail before loading models
    if args.retrieve < args.rerank_depth:
        raise CascadeError(f"--retrieve ({args.retrieve}) must be >= --rerank-depth ({args.rerank_depth})")
    cascade = Cascade.load(args.index, reranker=reranker_spec(args), device=args.device)
    result = cascade.search(args.query, retrieve=args.retrieve, rerank_depth=args.rerank_depth, top=args.top,
                            fusion=args.fusion, alpha=args.alpha)
    if args.json:
        out = result.to_dict()
        for hit in out["hits"]:
            hit.pop("text")
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(format_result(result))


def cmd_demo(args: argparse.Namespace) -> None:
    from cascade.demo import run_demo

    run_demo(reranker=reranker_spec(args), out=args.out, device=args.device)


COMMANDS = {"index": cmd_index, "search": cmd_search, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
