"""Load test of `cascade serve`: writes benchmarks/results/load.{json,md} and the README's load table.

    python benchmarks/load.py [--data ../shared/data/beir/scifact] [--seconds 20] [--clients 1,4,16]

Starts the real server on loopback (SciFact index, bundled reranker) twice, with micro-batching on and
off, and for each runs 1, 4 and 16 concurrent clients for a bounded time against /rerank (the hybrid
top-30 of a SciFact test query per request, as a RAG stack would send) and /search (default settings,
200 ms budget, score cache off). Reports throughput, p50/p95/p99 latency and errors per row; the micro-batching gain is
the ratio of throughputs measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import DATA, publish


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, micro: bool, *extra: str) -> tuple[subprocess.Popen, str]:
    """`cascade serve INDEX` on a free loopback port, up; `extra` flags are passed on (benchmarks/hostile.py)."""
    import httpx

    port = free_port()
    # no score cache: the clients cycle through 50 queries, and cached scores would hide the model's cost
    cmd = [sys.executable, "-m", "cascade.cli", "serve", str(index), "--port", str(port), "--cache", "none", *extra]
    proc = subprocess.Popen(cmd + ([] if micro else ["--no-micro-batching"]), stdout=subprocess.DEVNULL,
                            env={**os.environ, "CASCADE_API_KEY": ""})
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("cascade serve did not start")


async def drive(base: str, route: str, payloads: list[dict], clients: int, seconds: float) -> dict:
    import httpx

    latencies, errors, stop_at, failures = [], 0, time.perf_counter() + seconds, []

    async def client(offset: int):
        nonlocal errors
        n = offset
        async with httpx.AsyncClient(base_url=base, timeout=120) as c:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    r = await c.post(route, json=payloads[n % len(payloads)])
                    ok = r.status_code == 200
                    if not ok and not failures:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    ok = False
                    failures.append(repr(e))
                latencies.append((time.perf_counter() - start) * 1000)
                errors += not ok
                n += clients

    start = time.perf_counter()
    await asyncio.gather(*[client(i) for i in range(clients)])
    wall = time.perf_counter() - start
    ms = np.array(latencies)
    if failures:
        print(f"first failure on {route}: {failures[0]}", file=sys.stderr, flush=True)
    return {"requests": len(ms), "errors": errors, "throughput_rps": round(len(ms) / wall, 2),
            **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", default="1,4,16")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]

    from cascade.evaluate.beir import load_split
    from cascade.evaluate.runner import default_index_dir, open_cascade

    split = load_split(args.data, "test")
    cascade = open_cascade(args.data, None, None, progress=False)  # builds or refreshes the cached index
    queries = [split.queries[q] for q in list(split.queries)[:50]]
    content = [p.content for p in cascade.index.passages]
    rerank = [{"query": q, "documents": [content[int(i)] for i in
                                         cascade.run_stages(q, retrieve=150, rerank_depth=0).fusion[0][:30]]}
              for q in queries]
    search = [{"query": q} for q in queries]
    del cascade

    rows = []
    for micro in (True, False):
        proc, base = start_server(default_index_dir(args.data), micro)
        try:
            for route, payloads in (("/rerank", rerank), ("/search", search)):
                asyncio.run(drive(base, route, payloads, 1, 2.0))  # warm-up
                for n in clients:
                    row = {"micro_batching": micro, "route": route, "clients": n,
                           **asyncio.run(drive(base, route, payloads, n, args.seconds))}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

    def find(micro, route, n):
        return next(r for r in rows if r["micro_batching"] == micro and r["route"] == route and r["clients"] == n)

    most = max(clients)
    summary = {
        "errors": sum(r["errors"] for r in rows),
        "rerank_micro_batching_gain_at_max_clients": round(find(True, "/rerank", most)["throughput_rps"]
                                                           / find(False, "/rerank", most)["throughput_rps"], 2),
        "rerank_p95_at_4_over_p50_at_1": round(find(True, "/rerank", 4)["p95_ms"] / find(True, "/rerank", 1)["p50_ms"],
                                               2) if 4 in clients and 1 in clients else None,
    }
    report = {"data": str(args.data), "seconds_per_row": args.seconds, "rows": rows, "summary": summary}
    table = render(report, most)
    publish("load", report, table, marker="load")
    print(table)


def render(r: dict, most: int) -> str:
    lines = [f"`cascade serve` on loopback, SciFact index, bundled reranker; {r['seconds_per_row']:g} s per row. "
             "/rerank sends the hybrid top-30 of a SciFact test query; /search uses the defaults (200 ms budget), with the "
             "score cache off so every request pays for its reranking.",
             "", "| micro-batching | route | clients | req/s | p50 ms | p95 ms | p99 ms | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {'on' if row['micro_batching'] else 'off'} | {row['route']} | {row['clients']} | "
                     f"{row['throughput_rps']} | {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | {row['errors']} |")
    s = r["summary"]
    lines += ["", f"Errors: {s['errors']}. /rerank throughput with micro-batching over without, {most} clients: "
              f"{s['rerank_micro_batching_gain_at_max_clients']}x. /rerank p95 at 4 clients over p50 at 1 client: "
              f"{s['rerank_p95_at_4_over_p50_at_1']}x.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
