"""Rerank latency and quality, side by side, in one run: writes benchmarks/results/NAME.{json,md}.

    python benchmarks/rerank_latency.py [--data ../shared/data/beir/scifact] [--queries 100] [--extra DIR ...]
        [--name rerank-latency]

On the same hybrid top-D candidates of the first N SciFact test queries (D = 30 and 100), it times:
  * the baseline: sentence-transformers CrossEncoder.predict(pairs, batch_size=32), fp32, max_length 512,
    with the same weights (the default reranker, cascade-reranker-fast): "the same model run the slow way", and
    with each --extra model's weights (the bundled teacher cascade-reranker);
  * Cascade's CrossEncoder in each configuration: precision, token budget (max_length), batch size, and
    backend (eager torch, fused by oneDNN Graph, or OpenVINO int8: `cascade.models.backends`), and the teacher;
  * the full search path with its default 200 ms budget (how many candidates fit, the quality that keeps), with
    the default reranker and with each --extra one (`--reranker cascade-reranker`);
  * warm score-cache hits (in-process and Redis, when redis-server is installed);
and reports p50/p95 ms per query, pairs/s and nDCG@10 for each row. Ratios are against the baseline
measured in this run. The default token window is the one search uses on this index (fitted to its
passages, `IndexSettings.pair_tokens`), chosen with the passage length on dev by passage_window_dev.py;
the test rows here never choose anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import DATA, kind, machine, name_option, publish


@dataclass
class Row:
    name: str
    depth: int
    ms: list[float]
    pairs: int
    ndcg: float
    note: str = ""

    def summary(self) -> dict:
        return {"name": self.name, "depth": self.depth, "p50_ms": round(float(np.percentile(self.ms, 50)), 1),
                "p95_ms": round(float(np.percentile(self.ms, 95)), 1),
                "pairs_per_s": round(self.pairs / (sum(self.ms) / 1000), 1), "ndcg@10": round(self.ndcg, 4),
                "note": self.note}


def ndcg_of(cascade, split, qids, candidates, head_scores) -> float:
    """Mean nDCG@10 of: the scored head in score order, then the rest of the fused list (MaxP documents)."""
    from cascade.evaluate.metrics import mean, per_query
    from cascade.evaluate.runner import RUN_DEPTH, doc_run

    run = {}
    for qid, cands, scores in zip(qids, candidates, head_scores):
        n = len(scores)
        best = np.argsort(-scores, kind="stable")
        order = np.concatenate([cands[:n][best], cands[n:]])
        floor = float(scores.min()) if n else 0.0
        ranked_scores = np.concatenate([scores[best], floor - 1.0 - np.arange(len(cands) - n)])
        run[qid] = doc_run(cascade.index.passages, order, ranked_scores, RUN_DEPTH)
    return mean(per_query(run, {q: split.qrels[q] for q in qids}, ["ndcg@10"])["ndcg@10"])


def timed_calls(predict, inputs: list) -> tuple[list[float], list[np.ndarray]]:
    """(ms per call, float32 scores per call) of `predict` on each input in turn, after one warm-up call."""
    predict(inputs[0])
    ms, scores = [], []
    for one in inputs:
        start = time.perf_counter()
        scores.append(np.asarray(predict(one), dtype=np.float32))
        ms.append((time.perf_counter() - start) * 1000)
    return ms, scores


def time_predict(name, predict, cascade, split, qids, texts, candidates, depth, note="") -> Row:
    """Score the top `depth` candidates of every query with `predict(pairs) -> scores`, one call per query."""
    content = [p.content for p in cascade.index.passages]
    pairs_of = [[(texts[q], content[int(i)]) for i in c[:depth]] for q, c in zip(qids, candidates)]
    ms, scores = timed_calls(predict, pairs_of)
    row = Row(name, depth, ms, sum(len(p) for p in pairs_of), ndcg_of(cascade, split, qids, candidates, scores), note)
    print(json.dumps(row.summary()), flush=True)
    return row


def time_search(name, cascade, split, qids, texts, depth, budget_ms, repeat=False, note="") -> tuple[Row, list]:
    """The rerank stage of the real search path (cache, budget), as `search` runs it."""
    from cascade.evaluate.metrics import mean, per_query
    from cascade.evaluate.runner import RUN_DEPTH, doc_run, final_ranking

    def one_pass():
        out = []
        for q in qids:
            out.append(cascade.run_stages(texts[q], retrieve=150, rerank_depth=depth, budget_ms=budget_ms))
        return out

    runs = one_pass()
    if repeat:  # the second pass is served from the score cache
        runs = one_pass()
    run = {q: doc_run(cascade.index.passages, *final_ranking(r), RUN_DEPTH) for q, r in zip(qids, runs)}
    ndcg = mean(per_query(run, {q: split.qrels[q] for q in qids}, ["ndcg@10"])["ndcg@10"])
    scored = [r.statuses["rerank"]["scored"] for r in runs]
    row = Row(name, depth, [r.timings_ms["rerank"] for r in runs], sum(scored), ndcg, note)
    print(json.dumps(row.summary()), flush=True)
    return row, runs


def encode_rates(cascade, n: int = 1024) -> list[dict]:
    """Bi-encoder passages/s on the index's first `n` passages (what `cascade index` spends its time on), per
    precision and backend, best of two passes after a warm-up one, each against fp32 torch in this run."""
    from cascade.models.bi_encoder import Encoder

    texts = [p.content for p in cascade.index.passages[:n]]
    rows = []
    from cascade.models import openvino_int8

    runs = (("fp32", "torch"), ("auto", "torch"), ("auto", "fused")) + ((("fp32", "openvino"),)
                                                                      if openvino_int8.installed() else ())
    for precision, backend in runs:
        encoder = Encoder(precision=precision, backend=backend)
        best = min(timed_calls(lambda t: encoder.encode(t, batch_size=16), [texts, texts])[0])  # after a warm-up pass
        rows.append({"name": f"bi-encoder {kind(encoder)} {encoder.backend}", "passages_per_s": round(n / best * 1000, 1)})
        rows[-1]["speedup_vs_fp32"] = round(rows[-1]["passages_per_s"] / rows[0]["passages_per_s"], 2)
        print(json.dumps(rows[-1]), flush=True)
    return rows


class RedisProcess:
    def __init__(self, tmp: Path):
        import redis

        port = 6390 + int(time.time()) % 500
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--model", default="cascade-reranker-fast",
                        help="the model every configuration row times, and the baseline's weights (default: the "
                             "default reranker)")
    parser.add_argument("--extra", nargs="*", default=["cascade-reranker"],
                        help="more cross-encoders to time at the default settings (default: the bundled teacher)")
    name_option(parser, "rerank-latency")
    args = parser.parse_args()

    from sentence_transformers import CrossEncoder as STCrossEncoder

    from cascade import CrossEncoder
    from cascade.evaluate.beir import load_split
    from cascade.evaluate.runner import open_cascade
    from cascade.models.hub import resolve
    from cascade.models.runtime import cpu_has_fast_bf16, dtype_name
    from cascade.models.verdicts import precision_verdict
    from cascade.pipeline import index_pair_tokens
    from cascade.rerank import load_reranker
    from cascade.settings import SearchSettings

    DEFAULT_BUDGET_MS = SearchSettings().budget_ms
    from cascade.rerank.cache import MemoryCache, RedisCache

    split = load_split(args.data, "test")
    qids = list(split.queries)[: args.queries]
    texts = split.queries
    cascade = open_cascade(args.data, None, None, progress=False)
    candidates = [cascade.run_stages(texts[q], retrieve=150, rerank_depth=0).fusion[0][:100] for q in qids]

    rows: list[Row] = []
    # bf16 where the CPU has AMX; the window search fits to this index's passages; the backend "auto" picks here
    fit = index_pair_tokens(cascade.index.manifest)
    default = CrossEncoder(args.model, fit=fit)
    default_len, batch = default.max_length, SearchSettings().batch_size
    common = (cascade, split, qids, texts, candidates)

    # fp32 explicitly: transformers would otherwise keep the bf16 the bundled weights are stored in
    baseline = STCrossEncoder(str(resolve(args.model)), device="cpu", max_length=512,
                              model_kwargs={"dtype": torch.float32})
    assert next(baseline.model.parameters()).dtype == torch.float32
    rows.append(time_predict("baseline: sentence-transformers CrossEncoder, fp32, max_length 512, batch 32",
                             lambda p: baseline.predict(p, batch_size=32, show_progress_bar=False), *common, depth=30))
    for extra in args.extra:  # the seeds' recipe on each extra model's weights too: what its users would run
        slow = STCrossEncoder(str(resolve(extra)), device="cpu", max_length=512, model_kwargs={"dtype": torch.float32})
        rows.append(time_predict(f"{Path(extra).name} weights in sentence-transformers, fp32, max_length 512, batch 32",
                                 lambda p, slow=slow: slow.predict(p, batch_size=32, show_progress_bar=False), *common,
                                 depth=30))

    fp32 = CrossEncoder(args.model, precision="fp32", max_length=512, backend="torch")
    rows.append(time_predict("cascade fp32 torch, max_length 512, batch 8",
                             lambda p: fp32.predict(p, batch_size=8, raw_scores=True), *common, depth=30))
    for max_length in (512, 256):
        ce = CrossEncoder(args.model, max_length=max_length, backend="torch")
        rows.append(time_predict(f"cascade bf16 torch, max_length {max_length}, batch 8",
                                 lambda p, ce=ce: ce.predict(p, batch_size=8, raw_scores=True), *common, depth=30))
    from cascade.models import openvino_int8

    int8 = ("openvino",) if openvino_int8.installed() else ()  # int8: what auto may pick where bf16 does not pay
    for backend in ("torch", "fused", *int8):
        ce = CrossEncoder(args.model, fit=fit, backend=backend)
        for depth, sizes in ((30, (8, 32)), (100, (32,))):
            for bs in sizes:
                label = " (default)" if backend == default.backend and bs == batch else ""
                rows.append(time_predict(f"cascade {kind(ce)} {backend}, max_length {default_len}, batch {bs}{label}",
                                         lambda p, ce=ce, bs=bs: ce.predict(p, batch_size=bs, raw_scores=True),
                                         *common, depth=depth))
    others = [CrossEncoder(extra, fit=fit) for extra in args.extra]  # timed bare here, on the search path below
    for extra, auto in zip(args.extra, others):
        for ce in (auto, *(CrossEncoder(extra, fit=fit, backend=b) for b in int8)):
            for depth in (30, 100):
                rows.append(time_predict(f"{Path(extra).name} {kind(ce)} {ce.backend}, max_length {ce.max_length}, "
                                         f"batch {batch}", lambda p, ce=ce: ce.predict(p, batch_size=batch,
                                                                                      raw_scores=True),
                                         *common, depth=depth))

    searched = load_reranker(fit=fit).reranker  # the default reranker, loaded as search loads it
    scored = {}
    for reranker, depths in ((searched, (30, 100)), *((other, (30,)) for other in others)):
        cascade.reranker = reranker
        for depth in depths:
            row, runs = time_search(f"search path, {Path(reranker.model_id).name}"
                                    f"{' (default)' if reranker is searched else ''}, budget {DEFAULT_BUDGET_MS:g} ms, "
                                    f"{reranker.backend}, max_length {reranker.max_length}, batch {batch}",
                                    *common[:4], depth=depth, budget_ms=DEFAULT_BUDGET_MS,
                                    note="pairs/s counts scored pairs")
            rows.append(row)
            if reranker is searched:
                scored[str(depth)] = {
                    "mean_scored": round(float(np.mean([r.statuses["rerank"]["scored"] for r in runs])), 1),
                    "degraded_share": round(float(np.mean([r.statuses["rerank"]["degraded"] for r in runs])), 3)}
    cascade.reranker = searched

    cache_rows = {}
    cascade.cache = MemoryCache()
    row, _ = time_search("warm cache hit, in-process LRU", *common[:4], depth=30, budget_ms=None, repeat=True)
    rows.append(row)
    cache_rows["memory"] = row.summary()
    if shutil.which("redis-server"):
        with tempfile.TemporaryDirectory() as tmp:
            server = RedisProcess(Path(tmp))
            try:
                cascade.cache = RedisCache(server.url)
                row, _ = time_search("warm cache hit, Redis on loopback", *common[:4], depth=30, budget_ms=None,
                                     repeat=True)
                rows.append(row)
                cache_rows["redis"] = row.summary()
            finally:
                server.stop()

    encoding = encode_rates(cascade)
    base = rows[0].summary()
    report = {
        "machine": {**machine(), "threads": torch.get_num_threads()},
        "data": str(args.data), "queries": len(qids), "model": args.model, "default_max_length": default_len,
        "default_reranker": searched.model_id,
        "auto": {"backend": default.backend, **(vars(default.verdict) if default.verdict else {})},
        "precision": {"chosen": dtype_name(default.dtype),
                      **(vars(precision_verdict()) if cpu_has_fast_bf16() else {})},
        "passage_words": cascade.index.manifest["settings"]["passage_words"],
        "rows": [dict(r.summary(), speedup_vs_baseline_p50=round(base["p50_ms"] / r.summary()["p50_ms"], 1)
                      if r.depth == 30 else None) for r in rows],
        "budget": scored,
        "encoding": encoding,
    }
    table = render(report)
    publish(args.name, report, table, marker=args.name)
    print(table)


def render(r: dict) -> str:
    lines = [
        f"Reranking the hybrid top-D of {r['queries']} SciFact test queries with `{r['model']}` "
        f"({r['machine']['threads']} CPU threads, torch {r['machine']['torch']}); ms per query:",
        "",
        "| configuration | D | p50 ms | p95 ms | pairs/s | nDCG@10 | p50 speed-up vs baseline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        speed = f"{row['speedup_vs_baseline_p50']}x" if row["speedup_vs_baseline_p50"] else "—"
        lines.append(f"| {row['name']} | {row['depth']} | {row['p50_ms']} | {row['p95_ms']} | {row['pairs_per_s']} | "
                     f"{row['ndcg@10']:.4f} | {speed} |")
    b = r["budget"]
    lines += ["", f"The search path runs the default reranker, `{r['default_reranker']}`. "
              f"With the default 200 ms budget it scored {b['30']['mean_scored']} of 30 candidates "
              f"on average (degraded on {100 * b['30']['degraded_share']:.0f}% of queries) and "
              f"{b['100']['mean_scored']} of 100 ({100 * b['100']['degraded_share']:.0f}%); its latency column is "
              "the rerank stage only. Cache rows time a repeated query's rerank stage. Passages: "
              f"{r['passage_words']} words; the default window ({r['default_max_length']} tokens) was chosen with "
              "that length on dev (benchmarks/passage_window_dev.py).", "",
              f"`--backend auto` chose **{r['auto']['backend']}** on this machine for `{r['model']}` (its probe at "
              f"load, 30 demo pairs scored as search scores them: {r['auto'].get('why')}); models ran in "
              f"**{r['precision']['chosen']}** ({r['precision'].get('why', 'no bf16 units: fp32, not measured')}).",
              "",
              "Index encoding, the bi-encoder on 1,024 of the index's passages (batch 16, best of two passes):", "",
              "| configuration | passages/s | vs fp32 |", "|---|---:|---:|",
              *[f"| {e['name']} | {e['passages_per_s']} | {e['speedup_vs_fp32']}x |" for e in r["encoding"]], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
