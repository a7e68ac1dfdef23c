"""Hostile input and load against `cascade serve`, on loopback, bounded in count and time (issue 21's proof).

    python benchmarks/hostile.py [--docs 1000] [--seconds 10]

Serves an index of the first --docs SciFact abstracts with the bundled reranker and records, per case, what
now holds: memory added by the largest requests the limits allow (peak RSS, from /proc), a poisoned request
among good micro-batched ones, /context cost as `top` grows, /health latency under 64 concurrent searches,
300 slow-header (slowloris) connections (and how many --read-timeout-s 5 closed with 408), and overload past
--max-queue. Writes
benchmarks/results/hostile.{json,md} and the README table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, machine, publish, rss_mb
from load import start_server

READ_TIMEOUT_S = 5  # the server's --read-timeout-s here: short, so the slow-header case ends quickly


async def post(c, path: str, body: dict):
    """JSON with \\u escapes, as a client library writes it: a lone surrogate is sendable that way."""
    start = time.perf_counter()
    r = await c.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    return r.status_code, (time.perf_counter() - start) * 1000


async def cases(base: str, pid: int, texts: list[str], seconds: float) -> dict:
    import httpx

    out: dict = {}
    async with httpx.AsyncClient(base_url=base, timeout=600) as c:
        await post(c, "/search", {"query": "vitamin D and bone density"})  # warm
        start = rss_mb(pid)
        status, ms = await post(c, "/search", {"query": "vitamin D " * 2000, "budget_ms": None})  # 20,000 chars
        out["max_query_search"] = {"status": status, "ms": round(ms), "rss_added_mb": round(rss_mb(pid) - start)}
        big = (" ".join(texts) * 50)[:250_000]
        start = rss_mb(pid)
        status, ms = await post(c, "/rerank", {"query": "vitamin D", "documents": [big] * 30})  # ~7.5 MB body
        out["max_body_rerank"] = {"status": status, "ms": round(ms), "rss_added_mb": round(rss_mb(pid) - start)}
        status, _ = await post(c, "/search", {"query": "x" * 5_000_000})
        out["5mb_query"] = {"status": status}

        good = [post(c, "/rerank", {"query": "vitamin D", "documents": texts[i:i + 8]}) for i in range(0, 400, 8)]
        poisoned = post(c, "/rerank", {"query": "vitamin D \ud800", "documents": texts[:8]})
        results = await asyncio.gather(poisoned, *good)
        out["poisoned_batch"] = {"poisoned_status": results[0][0], "good": len(good),
                                 "good_ok": sum(s == 200 for s, _ in results[1:])}

        out["context_seconds_by_top"] = {}
        for top in (100, 1000):
            status, ms = await post(c, "/context", {"query": "vitamin D deficiency", "top": top, "retrieve": top,
                                                    "rerank_depth": 0, "max_tokens": 1_000_000})
            out["context_seconds_by_top"][top] = {"status": status, "seconds": round(ms / 1000, 2)}

        stop = time.perf_counter() + seconds
        statuses: list[int] = []

        async def searcher(k: int):
            while time.perf_counter() < stop:
                statuses.append((await post(c, "/search", {"query": texts[k % len(texts)][:80]}))[0])

        async def prober() -> list[float]:
            seen = []
            while time.perf_counter() < stop:
                start = time.perf_counter()
                await c.get("/health")
                seen.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.1)
            return seen

        probes, *_ = await asyncio.gather(prober(), *(searcher(k) for k in range(64)))
        out["health_under_64_searches"] = {"probes": len(probes), "p50_ms": round(float(np.percentile(probes, 50)), 1),
                                           "p99_ms": round(float(np.percentile(probes, 99)), 1),
                                           "searches": len(statuses), "search_statuses": sorted(set(statuses))}

    host, port = base.removeprefix("http://").split(":")
    sockets = []
    for _ in range(300):  # each sends half a request line and then nothing
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sockets.append(s)
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        start = time.perf_counter()
        r = await c.get("/health")
        out["slowloris_300"] = {"health_status": r.status_code, "ms": round((time.perf_counter() - start) * 1000, 1)}
    closed = 0
    for s in sockets:
        s.settimeout(READ_TIMEOUT_S + 10)
        closed += s.recv(64).startswith(b"HTTP/1.1 408 ")
        s.close()
    out["slowloris_300"]["closed_408"] = closed
    return out


async def overload(base: str) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=600, limits=httpx.Limits(max_connections=200)) as c:
        results = await asyncio.gather(*(c.post("/search", json={"query": f"protein folding {k}", "budget_ms": None})
                                         for k in range(128)))
    codes = [r.status_code for r in results]
    return {"requests": len(codes), "ok": codes.count(200), "refused_503": codes.count(503),
            "retry_after": sorted({r.headers.get("retry-after") for r in results if r.status_code == 503})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000, help="SciFact abstracts to index (1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the 64 searchers run (10)")
    args = parser.parse_args()

    from cascade import Cascade
    from cascade.documents import load_documents

    docs = load_documents(DATA / "scifact")[: args.docs]
    texts = [d.text for d in docs]
    with tempfile.TemporaryDirectory() as tmp:
        Cascade.build(docs, Path(tmp) / "idx", reranker=None)
        report: dict = {"machine": machine(), "docs": len(docs)}
        proc, base = start_server(Path(tmp) / "idx", True, "--read-timeout-s", str(READ_TIMEOUT_S))
        try:
            report["cases"] = asyncio.run(cases(base, proc.pid, texts, args.seconds))
            report["peak_rss_mb"] = round(rss_mb(proc.pid, "VmHWM"))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        proc, base = start_server(Path(tmp) / "idx", True, "--max-queue", "16")
        try:
            report["cases"]["overload_128_at_max_queue_16"] = asyncio.run(overload(base))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    table = render(report)
    publish("hostile", report, table, marker="hostile")
    print(table)


def render(r: dict) -> str:
    c = r["cases"]
    ctx = c["context_seconds_by_top"]
    h, o = c["health_under_64_searches"], c["overload_128_at_max_queue_16"]
    rows = [
        ("/search, a 20,000-character query (the limit)", f"{c['max_query_search']['status']}, "
         f"+{c['max_query_search']['rss_added_mb']} MB RSS, {c['max_query_search']['ms']} ms"),
        ("/rerank, 30 documents of 250 KB (a 7.5 MB body)", f"{c['max_body_rerank']['status']}, "
         f"+{c['max_body_rerank']['rss_added_mb']} MB RSS, {c['max_body_rerank']['ms']} ms"),
        ("/search, a 5 MB query", f"{c['5mb_query']['status']} (refused by name)"),
        ("one lone-surrogate /rerank among 50 good ones, micro-batched",
         f"it: {c['poisoned_batch']['poisoned_status']}; good: {c['poisoned_batch']['good_ok']}/"
         f"{c['poisoned_batch']['good']} answered 200"),
        ("/context, top 100 / top 1000 (budget 1M tokens)",
         f"{ctx[100]['seconds']} s / {ctx[1000]['seconds']} s"),
        ("/health while 64 clients search", f"p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms over {h['probes']} probes; "
         f"searches {h['search_statuses']}"),
        ("/health with 300 slow-header connections open", f"{c['slowloris_300']['health_status']} in "
         f"{c['slowloris_300']['ms']} ms; {c['slowloris_300'].get('closed_408', '-')}/300 closed with 408 by "
         f"--read-timeout-s {READ_TIMEOUT_S}"),
        ("128 concurrent /search at --max-queue 16", f"{o['ok']} answered, {o['refused_503']} refused at once with "
         f"503 (Retry-After {', '.join(map(str, o['retry_after'])) or '-'})"),
    ]
    lines = [f"`cascade serve` on loopback over {r['docs']} SciFact abstracts, bundled reranker "
             f"({r['machine']['cpu']}); peak RSS {r['peak_rss_mb']} MB over the whole run.", "",
             "| case | what holds now |", "|---|---|"]
    lines += [f"| {case} | {holds} |" for case, holds in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
