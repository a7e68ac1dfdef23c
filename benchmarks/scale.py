"""How first-stage cost grows with the corpus: 100k and 1M passages made from SciFact.

Corpus: each synthetic passage is a real SciFact passage with a quarter of its words swapped for words
of another random SciFact passage, so BM25 sees realistic text and vocabulary growth. Encoding 1M
passages with MiniLM takes hours on a 2-core CPU, so the synthetic passages' vectors are *derived*,
not encoded: normalise(0.75 v_a + 0.25 v_b + noise), from the real vectors of the two source passages.
Everything else (chunking, BM25 counts and scoring, vector storage, the ANN build, every search) is
the real code path. Encoding throughput is measured on 1,000 synthetic passages with the real encoder
and the encode time at each size is extrapolated from it, and marked so.

Queries: the 300 SciFact test queries, encoded with the real encoder. Each size is searched in a fresh
process, so its RSS is what serving that index costs. ANN Recall@200 is measured against an exact scan
of the same vectors, for the same queries.

    python benchmarks/scale.py [--sizes 100000 1000000]

Writes benchmarks/results/scale.{json,md} and the README block `scale`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, machine, publish, rss_mb  # noqa: E402

SWAP = 0.25  # share of a passage's words taken from another passage
NOISE = 0.05
DEPTH = 150  # candidates per first-stage retriever, as the cascade's default `retrieve`
RECALL_AT = 200
EF_SWEEP = (128, 256, 512, 1024, 2048)
TRAIN_QUERIES = 300  # SciFact train queries: the dev set for choosing efSearch


def base_passages():
    """SciFact's passages and their real vectors, from the evaluation index (built once, then reused)."""
    from cascade.evaluate.runner import open_cascade

    engine = open_cascade(DATA / "scifact", None, reranker=None, progress=True)
    contents = [p.content for p in engine.index.passages]
    return engine, contents, np.asarray(engine.index.dense.vectors(), dtype=np.float32)


class DerivedEncoder:
    """Stands in for the bi-encoder at index time: returns each synthetic passage's derived vector."""

    def __init__(self, real, recipes: dict[str, tuple[int, int, int]], vectors: np.ndarray):
        self.model_id, self.dim, self.max_length, self.pooling = real.model_id, real.dim, real.max_length, real.pooling
        self.recipes, self.vectors = recipes, vectors

    def encode(self, texts, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            a, b, seed = self.recipes[hashlib.sha256(text.encode()).hexdigest()[:32]]
            noise = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32) / np.sqrt(self.dim)
            v = 0.75 * self.vectors[a] + 0.25 * self.vectors[b] + NOISE * noise
            out[row] = v / np.linalg.norm(v)
        return out


def synthetic(contents: list[str], n: int, seed: int = 0):
    """(documents, recipes): n passages mixed from pairs of base passages, each kept whole as one passage."""
    from cascade.documents import Document

    rng = np.random.default_rng(seed)
    words = [c.split() for c in contents]
    pairs = rng.integers(len(contents), size=(n, 2))
    docs, recipes = [], {}
    for i, (a, b) in enumerate(pairs.tolist()):
        text = list(words[a])
        swap = np.flatnonzero(rng.random(len(text)) < SWAP)
        donor = words[b]
        for j, k in zip(swap.tolist(), rng.integers(len(donor), size=len(swap)).tolist()):
            text[j] = donor[k]
        doc = Document(id=f"s{i}", text=" ".join(text))
        docs.append(doc)
        recipes[hashlib.sha256(doc.text.encode()).hexdigest()[:32]] = (a, b, i)
    return docs, recipes


def disk(data: Path) -> dict[str, int]:
    parts = {"passages": 0, "bm25": 0, "vectors": 0, "ann": 0, "other": 0}
    for f in data.rglob("*"):
        if f.is_file():
            name = f.relative_to(data).as_posix()
            key = ("passages" if "/passages" in name else "bm25" if "/bm25/" in name or name == "bm25.json"
                   else "vectors" if name.endswith("vectors.npy") else "ann" if "ann." in name else "other")
            parts[key] += f.stat().st_size
    return parts


def rss() -> int:
    return round(rss_mb() * 2**20)


def probe(index_dir: str, queries_file: str) -> dict:
    """Run in a fresh process: open the index, search every query, report latencies, recall and RSS."""
    from cascade.index import Index
    from cascade.retrieve.hybrid import fuse

    before = rss()
    t = time.perf_counter()
    index = Index.load(index_dir)
    open_s = time.perf_counter() - t
    q = json.loads(Path(queries_file).read_text())
    texts, vectors = q["texts"], np.asarray(q["vectors"], dtype=np.float32)
    ms = {"bm25": [], "dense_ann": [], "dense_exact": [], "hybrid": []}
    recall = []
    for _ in range(2):  # the first pass warms the page cache; the second is measured
        for key in ms:
            ms[key].clear()
        recall.clear()
        for text, v in zip(texts, vectors):
            t0 = time.perf_counter()
            bm25 = index.bm25.search(text, DEPTH)
            t1 = time.perf_counter()
            dense = index.dense.search(v, DEPTH)
            t2 = time.perf_counter()
            fuse("rrf", bm25, dense, limit=DEPTH)
            t3 = time.perf_counter()
            exact = index.dense.exact(v, RECALL_AT)[0]
            t4 = time.perf_counter()
            recall.append(len(np.intersect1d(index.dense.search(v, RECALL_AT)[0], exact)) / max(1, len(exact)))
            ms["bm25"].append((t1 - t0) * 1000)
            ms["dense_ann"].append((t2 - t1) * 1000)
            ms["hybrid"].append((t3 - t0) * 1000)
            ms["dense_exact"].append((t4 - t3) * 1000)  # a full scan: k hardly matters
    sweep = ef_sweep(index, {"test": vectors, "train": np.asarray(q["train_vectors"], dtype=np.float32)})
    return {"open_s": open_s, "rss_bytes": rss() - before, "ef_search_sweep": sweep,
            f"recall@{RECALL_AT}": float(np.mean(recall)),
            "latency_ms": {k: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}
                           for k, v in ms.items()}}


def ef_sweep(index, query_sets: dict[str, np.ndarray]) -> dict:
    """HNSW Recall@200 and p50 latency at several efSearch values, for dev (train) and test queries."""
    specs = [s.dense.spec for s in index.shards]
    if specs[0]["kind"] != "hnsw":
        return {}
    default = specs[0]["ef_search"]
    exact = {name: [index.dense.exact(v, RECALL_AT)[0] for v in vs] for name, vs in query_sets.items()}
    out = {}
    for ef in EF_SWEEP:
        for spec in specs:
            spec["ef_search"] = ef
        for name, vs in query_sets.items():
            recall, ms = [], []
            for v, truth in zip(vs, exact[name]):
                t = time.perf_counter()
                found = index.dense.search(v, RECALL_AT)[0]
                ms.append((time.perf_counter() - t) * 1000)
                recall.append(len(np.intersect1d(found, truth)) / max(1, len(truth)))
            out[f"{name}@{ef}"] = {"recall": float(np.mean(recall)), "p50_ms": float(np.percentile(ms, 50))}
    for spec in specs:
        spec["ef_search"] = default
    return out


def encode_rate(engine, docs) -> float:
    """Passages per second of the real bi-encoder on synthetic passages (the part this benchmark derives)."""
    sample = [d.text for d in docs[:1000]]
    t = time.perf_counter()
    engine.encoder.encode(sample)
    return len(sample) / (time.perf_counter() - t)


def run_size(engine, contents, vectors, n: int, workdir: Path, queries_file: Path, rate: float) -> dict:
    from cascade.index import Index

    docs, recipes = synthetic(contents, n)
    out = workdir / f"idx-{n}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    index, stats = Index.build(iter(docs), DerivedEncoder(engine.encoder, recipes, vectors), out,
                               passage_words=0, progress=True)
    build_s = time.perf_counter() - t
    del docs, recipes
    parts = disk(index.data)
    served = json.loads(subprocess.run([sys.executable, __file__, "--probe", str(out), str(queries_file)],
                                       check=True, capture_output=True, text=True).stdout)
    result = {"passages": stats.passages, "build_s_without_encoding": build_s,
              "encode_s_extrapolated": stats.passages / rate, "ann": index.manifest["ann"][0],
              "disk_bytes": parts, "disk_bytes_per_passage": sum(parts.values()) / stats.passages, **served,
              "rss_bytes_per_passage": served["rss_bytes"] / stats.passages}
    shutil.rmtree(out, ignore_errors=True)
    return result


def table(rows: list[dict], rate: float, cpu: str) -> str:
    lat = lambda r, k: f"{r['latency_ms'][k]['p50']:.1f} / {r['latency_ms'][k]['p95']:.1f}"  # noqa: E731
    lines = ["| passages | dense index | build (no encoding) | encode (extrapolated) | disk per passage | "
             "RSS added by serving | BM25 p50/p95 ms | dense ANN p50/p95 ms | exact scan p50/p95 ms | hybrid p50/p95 ms | "
             "ANN Recall@200 |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['passages']:,} | {r['ann']['kind']} | {r['build_s_without_encoding'] / 60:.1f} min | "
                     f"{r['encode_s_extrapolated'] / 3600:.1f} h | {r['disk_bytes_per_passage'] / 1024:.2f} KiB | "
                     f"{r['rss_bytes'] / 2**20:.0f} MiB | {lat(r, 'bm25')} | {lat(r, 'dense_ann')} | "
                     f"{lat(r, 'dense_exact')} | {lat(r, 'hybrid')} | {r[f'recall@{RECALL_AT}']:.3f} |")
    sweeps = [(r["passages"], r["ef_search_sweep"]) for r in rows if r["ef_search_sweep"]]
    if sweeps:
        lines += ["", "HNSW efSearch (chosen on SciFact train queries; test shown for the record): Recall@200, "
                  "dense p50 ms at k=200", "",
                  "| passages | " + " | ".join(f"ef {ef} train" for ef in EF_SWEEP) + " | "
                  + " | ".join(f"ef {ef} test" for ef in EF_SWEEP) + " |",
                  "|---:|" + "---:|" * (2 * len(EF_SWEEP))]
        for n, sw in sweeps:
            cells = [f"{sw[f'{name}@{ef}']['recall']:.3f} ({sw[f'{name}@{ef}']['p50_ms']:.1f})"
                     for name in ("train", "test") for ef in EF_SWEEP]
            lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Measured on {cpu}, 2 cores, by `python benchmarks/scale.py`. Latencies exclude query encoding; "
                 f"the encoder ran at {rate:.0f} passages/s here, which gives the extrapolated encode time. "
                 "Vectors of the synthetic passages are derived from real ones, not encoded (see the script).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", default="/tmp/cascade-scale", help="scratch space for the indexes")
    parser.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(*args.probe)))
        return
    engine, contents, vectors = base_passages()
    from cascade.evaluate.beir import load_split

    split = load_split(DATA / "scifact", "test")
    texts = list(split.queries.values())
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    queries_file = workdir / "queries.json"
    train = list(load_split(DATA / "scifact", "train").queries.values())[:TRAIN_QUERIES]
    queries_file.write_text(json.dumps({"texts": texts, "vectors": engine.encoder.encode(texts).tolist(),
                                        "train_vectors": engine.encoder.encode(train).tolist()}))
    rate = encode_rate(engine, synthetic(contents, 1000, seed=1)[0])
    info = machine()
    cpu = info["cpu"]
    rows = []
    for n in args.sizes:
        rows.append(run_size(engine, contents, vectors, n, workdir, queries_file, rate))
        print(json.dumps(rows[-1]), flush=True)
    md = table(rows, rate, cpu)
    publish("scale", {"cpu": cpu, "machine": info, "encode_passages_per_s": rate, "sizes": rows,
                      "peak_rss_bytes_driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024},
            md, marker="scale")
    print(md)


if __name__ == "__main__":
    main()
