"""What each `cascade` subcommand does, given its parsed flags. Errors are CascadeErrors: one line, exit 2."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from cascade.cli.format import print_json
from cascade.cli.info import cmd_info
from cascade.cli.options import flag
from cascade.errors import CascadeError
from cascade.evaluate.chains import STAGES as EVAL_STAGES
from cascade.settings import NAMES, STAGE_DEPTHS, UNBUDGETED, SearchSettings, SettingError


def settings_from(args: argparse.Namespace, base: SearchSettings | None = None, stages: str | None = None,
                  **changes) -> SearchSettings:
    """The search settings the flags ask for, over `base`; `stages` (`--stages hybrid:150,rerank:20`) sets
    every depth at once. A bad setting is one line naming its flag."""
    values = {name: getattr(args, name) for name in NAMES if hasattr(args, name)} | changes
    try:
        if stages:
            depths = set(STAGE_DEPTHS.values())  # the spec sets these itself
            return SearchSettings.from_stages(stages, **{k: v for k, v in values.items() if k not in depths})
        return (base or SearchSettings()).replace(**values)
    except SettingError as e:
        raise CascadeError(e.render(flag)) from None


def llm_reranker(args: argparse.Namespace):
    """The LLM stage the flags ask for, or None."""
    if not args.llm_url:
        if args.llm_model:
            raise CascadeError("--llm-model needs --llm-url")
        return None
    from cascade.rerank.llm import LLMReranker

    return LLMReranker(args.llm_url, args.llm_model or "", window=args.llm_window, step=args.llm_step,
                       timeout_s=args.llm_timeout, api_key_env=args.llm_key_env)


def reranker_spec(args: argparse.Namespace) -> str | None:
    if args.no_rerank and args.reranker:
        raise CascadeError("--no-rerank and --reranker contradict each other; pick one")
    return None if args.no_rerank else (args.reranker or "auto")


def cmd_index(args: argparse.Namespace) -> None:
    from cascade import Cascade
    from cascade.documents import iter_documents
    from cascade.runners import RayRunner

    if args.late_interaction and args.no_late_interaction:
        raise CascadeError("--late-interaction and --no-late-interaction contradict each other; pick one")
    late = False if args.no_late_interaction else args.late_interaction
    runner = RayRunner(None if args.ray == "local" else args.ray) if args.ray else None
    try:
        cascade = Cascade.build(iter_documents(args.src), args.out, encoder=args.encoder, reranker=None,
                                passage_words=args.passage_words, overlap=args.overlap, device=args.device,
                                source=os.path.abspath(args.src), progress=not args.quiet, late_interaction=late,
                                late_dtype=args.late_dtype, shards=args.shards, ann=args.ann,
                                ann_params=dict(args.ann_param) if args.ann_param else None, runner=runner)
    except SettingError as e:
        raise CascadeError(e.render(flag)) from None
    st = cascade.build_stats
    m = cascade.index.manifest
    kinds = sorted({a["kind"] for a in m["ann"]})
    info = m.get("late_interaction")
    if args.json:
        print_json({"index": args.out, **dataclasses.asdict(st), "shards": len(m["shards"]), "ann": kinds,
                    "settings": m["settings"], "late_interaction": info})
        return
    print(f"indexed {st.documents} documents as {st.passages} passages into {args.out} in {st.seconds:.1f}s "
          f"(encoded {st.encoded}, reused {st.reused}, removed {st.removed}; {len(m['shards'])} shard(s), "
          f"dense search {'/'.join(kinds)})")
    if info:
        print(f"late interaction: {info['tokens']} token vectors ({info['model']}, dim {info['dim']}, {info['dtype']}), "
              f"{info['bytes'] / 2**20:.1f} MiB, {info['bytes_per_passage'] / 1024:.1f} KiB per passage")


def cmd_verify(args: argparse.Namespace) -> None:
    from pathlib import Path

    from cascade.index import verify_checksums

    checked = verify_checksums(Path(args.index))
    if args.json:
        print_json({"index": args.index, "ok": True, "bytes": checked})
        return
    print(f"index {args.index}: every file matches its checksum ({checked / 2**20:.1f} MiB checked)")


def cmd_search(args: argparse.Namespace) -> None:
    from cascade.cli.format import format_result

    engine, settings = open_for_query(args)
    result = engine.search(args.query, settings)
    if args.json:
        print_json(result.to_dict())
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
        print_json(context.to_dict())
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
    from cascade.cli.demo import run_demo

    run_demo(reranker=reranker_spec(args), out=args.out, device=args.device)


def open_dataset(args: argparse.Namespace, reranker: str | None, late_interaction: bool | None = None):
    from pathlib import Path

    from cascade.evaluate.beir import load_split
    from cascade.evaluate.runner import open_cascade

    split = load_split(args.data, args.split)  # fail on a bad split before indexing anything
    try:
        cascade = open_cascade(Path(args.data), Path(args.index) if args.index else None, reranker,
                               device=args.device, passage_words=args.passage_words, overlap=args.overlap,
                               progress=not args.quiet, late_interaction=late_interaction)
    except SettingError as e:
        raise CascadeError(e.render(flag)) from None
    return split, cascade


def cmd_eval(args: argparse.Namespace) -> None:
    from cascade.evaluate.chains import chain, parse_stages
    from cascade.evaluate.diagnostics import diagnose
    from cascade.evaluate.report import (
        PLOTS_NEED,
        eval_json,
        plot_stages,
        stage_table,
        write_json,
        write_report,
        write_runs,
    )
    from cascade.evaluate.runner import evaluate

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
        print(f"note: skipping hybrid+rerank: rerank unavailable ({cascade.rerank_unavailable})", file=sys.stderr)
        stages = [s for s in stages if s not in reranked]
    result = evaluate(cascade, split, stages, settings, limit=args.queries, progress=not args.quiet)
    notes = diagnose(result, {q: split.qrels[q] for q in list(split.queries)[: result.queries]})
    table = stage_table(result)
    title = f"{result.dataset} / {result.split}: {result.queries} queries"
    if args.json:
        print_json(eval_json(result, notes))
    else:
        print_eval(result, settings, title, table, notes)
    if args.json_out:
        write_json(args.json_out, eval_json(result, notes))
    if args.run_dir:
        write_runs(result, args.run_dir)
    if args.report:
        from pathlib import Path

        plot = plot_stages(result, Path(args.report).with_suffix(".png"))
        if plot is None:
            print(f"cascade: {PLOTS_NEED}", file=sys.stderr)
        write_report(args.report, title, [("Results by stage", table),
                                          ("Diagnostics", "\n".join(f"- {n}" for n in notes))], plot)


def print_eval(result, settings, title: str, table: str, notes: list[str]) -> None:
    print(f"{title} (retrieve {settings.retrieve}, rerank depth {settings.rerank_depth}, reranker "
          f"{result.settings['reranker'] or 'none'})\n")
    print(table)
    recall = result.settings.get("ann_recall@200")
    if recall is not None:
        print(f"\nANN ({result.settings['ann'][0]['kind']}) Recall@200 against exact search: {recall:.3f}")
    print("\n".join(f"- {n}" for n in notes))


def cmd_sweep(args: argparse.Namespace) -> None:
    from pathlib import Path

    from cascade.evaluate.report import PLOTS_NEED, plot_sweep, sweep_table, write_json, write_report
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
    if args.json:
        print_json({**result.to_dict(), "advice": advice})
    else:
        print(table + "\n" + advice)
    write_json(out / "sweep.json", result.to_dict())
    plot = plot_sweep(result, out / "sweep.png")
    write_report(out / "sweep.md", f"{result.dataset} / {result.split}: rerank depth sweep",
                 [("Quality and latency by depth", table), ("Suggestion", f"- {advice}")], plot)
    print(f"wrote {out}/sweep.md, sweep.json" + (", sweep.png" if plot else f" ({PLOTS_NEED})"),
          file=sys.stderr if args.json else sys.stdout)


def training_config(args: argparse.Namespace, **extra):
    """A TrainConfig from the parsed flags of the same names; `extra` overrides them."""
    import shlex
    from dataclasses import fields

    from cascade.train.config import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if "source_weights" in given:
        given["source_weights"] = dict(given["source_weights"])
    return TrainConfig(**{**given, "command": shlex.join(["cascade", *args.argv]), **extra})


def run_training(args: argparse.Namespace, config, teachers: list[str] | None = None) -> None:
    from cascade.train.prepare import prepare
    from cascade.train.trainer import Trainer

    trainer = Trainer
    if getattr(args, "kind", "cross-encoder") == "late-interaction":
        from cascade.train.late import LateTrainer

        trainer = LateTrainer

    say = args.quiet and not args.asked_quiet  # no bars (a log): one line per milestone instead
    if say:
        print("cascade: preparing training data: first-stage runs for hard negatives, pseudo-queries and dev lists "
              "(minutes on a CPU)", file=sys.stderr, flush=True)
    data = prepare(args.data, config, progress=not args.quiet)
    if say:
        print(f"cascade: {len(data.examples)} training queries, {len(data.dev)} dev queries; training",
              file=sys.stderr, flush=True)
    if teachers:
        from cascade.train.distill import score_with_teachers

        score_with_teachers(data.examples, teachers, args.out, device=args.device, max_length=args.max_length,
                           progress=not args.quiet)
    result = trainer(config, data).run(progress=not args.quiet, log=not args.asked_quiet)
    if args.json:
        print_json({"out": args.out, **{k: v for k, v in dataclasses.asdict(result).items() if k != "history"}})
        return
    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; best dev nDCG@10 {result.best_dev_ndcg:.4f} "
          f"at step {result.best_step} (first stage {result.first_stage_dev_ndcg:.4f}; mean over dev sources of the "
          f"blended cascade); model in {args.out}")
    for source, row in result.best_dev.items():
        print(f"  {source}: first stage {row['first_stage']:.4f}, reranker alone {row['alone']:.4f}, "
              f"blended {row['blended']:.4f}")


def cmd_train(args: argparse.Namespace) -> None:
    from cascade.models.hub import DEFAULT_ENCODER

    run_training(args, training_config(args, base=args.base or DEFAULT_ENCODER))


def cmd_serve(args: argparse.Namespace) -> None:
    import faulthandler
    from pathlib import Path

    from cascade.serve import require_serve_extra

    require_serve_extra()
    import uvicorn

    from cascade import Cascade
    from cascade.index import read_manifest
    from cascade.pipeline import index_pair_tokens
    from cascade.rerank.cache import open_cache
    from cascade.rerank.factory import load_reranker
    from cascade.serve.app import ServeConfig, create_app
    from cascade.serve.deadline import read_deadline

    if not 0 <= args.batch_window_ms < float("inf"):
        raise CascadeError(f"--batch-window-ms must be a number >= 0, got {args.batch_window_ms}")
    cache = open_cache(args.cache, ttl_s=args.cache_ttl)
    fit = index_pair_tokens(read_manifest(Path(args.index))) if args.index else None  # /rerank reads as far too
    choice = load_reranker(args.reranker, device=args.device, fit=fit)
    if choice.reranker is None:
        raise CascadeError(f"no reranker to serve: {choice.reason}")
    engine = Cascade.load(args.index, reranker=choice.reranker, device=args.device, cache=cache,
                          verify="sample" if args.no_verify else True) if args.index else None
    faulthandler.enable()  # a crash the interpreter cannot catch (SIGBUS on a file changed under it) leaves a line
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"cascade: warning: serving on {args.host} without --api-key: anyone who can reach this port can use "
              "it", file=sys.stderr)
    config = ServeConfig(index=Path(args.index) if args.index else None, api_key=args.api_key or None,
                         max_documents=args.max_documents, max_body_bytes=int(args.max_body_mb * 2**20),
                         micro_batching=not args.no_micro_batching, batch_window_ms=args.batch_window_ms,
                         tokenizer=args.tokenizer, public_docs=args.public_docs, max_queue=args.max_queue)
    app = create_app(choice.reranker, engine, config)
    print(f"cascade: serving {choice.reranker.model_id}"
          f"{f' and {args.index}' if args.index else ''} on http://{args.host}:{args.port} (docs at /docs)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=args.drain_s,
                limit_concurrency=args.max_connections, http=read_deadline(args.read_timeout_s))


def cmd_distill(args: argparse.Namespace) -> None:
    from cascade.models.hub import read_config, resolve

    teachers = [resolve(t) for t in args.teachers]  # the student starts from the first one's layers
    depth = read_config(teachers[0]).get("num_hidden_layers")
    if depth and args.layers > depth:  # said before minutes of data preparation and teacher scoring, not after
        raise CascadeError(f"--layers {args.layers}: the teacher {args.teachers[0]} has {depth} layers; a student "
                           "keeps at most that many")
    config = training_config(args, base=teachers[0], teachers=tuple(args.teachers))
    run_training(args, config, teachers=teachers)


def cmd_adapt(args: argparse.Namespace) -> None:
    import shlex

    from cascade.models.hub import resolve
    from cascade.train.adapt import adapt, adapt_config

    changes = {k: getattr(args, k) for k in ("pseudo_queries", "max_steps", "lr", "batch_queries", "eval_every",
                                              "max_length", "seed", "resume", "device", "llm_url", "llm_model")}
    if args.base:
        changes["base"] = resolve(args.base)
    config = adapt_config(args.out, **changes, command=shlex.join(["cascade", *args.argv]))
    report = adapt(args.index, config, progress=not args.quiet)
    if args.json:
        summary = dataclasses.asdict(report)
        summary["training"] = {k: v for k, v in summary["training"].items() if k != "history"}
        print_json(summary)
        return
    print(f"held-out pseudo-queries: {report.held_out}; nDCG@10 blended as search runs it (reranker alone):\n"
          f"  first stage     {report.first_stage:.4f}\n"
          f"  starting model  {report.base:.4f} ({report.base_alone:.4f})\n"
          f"  adapted model   {report.adapted:.4f} ({report.adapted_alone:.4f})\n"
          f"{report.verdict}; recorded in {args.index}/reranker.json")


COMMANDS = {"info": cmd_info, "index": cmd_index, "verify": cmd_verify, "search": cmd_search, "context": cmd_context,
            "demo": cmd_demo, "eval": cmd_eval, "sweep": cmd_sweep, "train": cmd_train, "adapt": cmd_adapt,
            "distill": cmd_distill, "serve": cmd_serve}
