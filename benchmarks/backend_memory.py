"""What a cross-encoder backend holds in memory, by pair length and by calling thread, and its pairs/s.

    python benchmarks/backend_memory.py [--model cascade-reranker-fast] [--pairs 64]

Each row is a fresh process (RSS is per process): the model at a 512-token window scores --pairs pairs at
128, 256 and 512 tokens (the first call at a length builds its graphs; pairs/s is the best of 3 later calls),
then 30 pairs from each of 40 threads, one at a time, as a server's thread pool under its model lock would.
Rows: eager torch, fused as shipped (at most `backends.MAX_TOKENS` tokens a call: 32 rows at 128 tokens, 8 at
512), and fused with 4x that budget (32 rows at 512 tokens; 128 at 128), which shows what the cap saves and
costs. Writes benchmarks/results/backend-memory.{json,md} and the README table. Compare rows, not machines.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import machine, publish, rss_mb

LENGTHS = (128, 256, 512)
ROWS = {"torch": ("torch", None), "fused": ("fused", None), "fused, 4x tokens a call": ("fused", 4)}


def measure(model: str, backend: str, budget_x: int | None, pairs: int) -> dict:
    """One row, in this process."""
    import threading
    import time

    from cascade.models import backends
    from cascade.rerank.cross_encoder import CrossEncoder

    if budget_x:
        backends.MAX_TOKENS *= budget_x
    ce = CrossEncoder(model, backend=backend, max_length=512)
    row = {"backend": ce.backend, "loaded_mb": round(rss_mb())}
    for length in LENGTHS:  # "a" is one token: with the query's, the pair pads to `length`
        batch = [("does rate limiting add latency", "a " * (length - 16))] * pairs
        ce.predict(batch, batch_size=pairs)
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            ce.predict(batch, batch_size=pairs)
            seconds.append(time.perf_counter() - start)
        row[f"mb_after_{length}"] = round(rss_mb())
        row[f"pairs_s_{length}"] = round(pairs / min(seconds), 1)
    search, lock = [("does rate limiting add latency", "a " * 100)] * 30, threading.Lock()

    def one_at_a_time() -> None:  # as a server's model lock runs them
        with lock:
            ce.predict(search)

    threads = [threading.Thread(target=one_at_a_time) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    row["mb_after_40_threads"] = round(rss_mb())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cascade-reranker-fast", help="the cross-encoder (default: the default)")
    parser.add_argument("--pairs", type=int, default=64, help="pairs a call at each length (64)")
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # internal: one row, in a child
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure(args.model, *ROWS[args.row], args.pairs)))
        return
    rows = {}
    for name in ROWS:
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--pairs", str(args.pairs), "--row",
                              name], capture_output=True, text=True, check=True).stdout
        rows[name] = json.loads(out.strip().splitlines()[-1])
        print(name, rows[name], flush=True)
    head = ["loaded"] + [f"after {n} tokens" for n in LENGTHS] + ["after 40 threads"]
    lines = [f"`{args.model}` at a 512-token window, {args.pairs} pairs a call; RSS in MB after each step (each row a "
             "fresh process), then pairs/s at each length.", "",
             "| backend | " + " | ".join(f"MB {h}" for h in head) + " | " + " | ".join(f"pairs/s at {n}" for n in LENGTHS)
             + " |", "|---|" + "---:|" * (len(head) + len(LENGTHS))]
    for name, r in rows.items():
        cells = [r["loaded_mb"], *(r[f"mb_after_{n}"] for n in LENGTHS), r["mb_after_40_threads"],
                 *(r[f"pairs_s_{n}"] for n in LENGTHS)]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    publish("backend-memory", {"machine": machine(), "model": args.model, "pairs": args.pairs, "rows": rows},
            "\n".join(lines) + "\n", marker="backend-memory")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
