"""Shared fixtures: real models (a tiny random cross-encoder, the bundled MiniLM), real data paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
BEIR = ROOT.parent / "shared" / "data" / "beir"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def beir_slice(src: Path, out: Path, split: str, n_queries: int, distractors: int) -> Path:
    """A small BEIR folder cut from a real one: the first `n_queries` of `split`, their judged documents and
    `distractors` other documents, with qrels for that split only."""
    import csv

    from cascade.documents import load_documents

    with open(src / "qrels" / f"{split}.tsv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    qids = list(dict.fromkeys(r[0] for r in rows))[:n_queries]
    rows = [r for r in rows if r[0] in qids]
    relevant = {r[1] for r in rows}
    docs = load_documents(src)
    keep = [d for d in docs if d.id in relevant] + [d for d in docs if d.id not in relevant][:distractors]
    write_jsonl(out / "corpus.jsonl", [{"_id": d.id, "title": d.title, "text": d.text} for d in keep])
    with open(src / "queries.jsonl", encoding="utf-8") as fh:
        queries = [json.loads(line) for line in fh]
    write_jsonl(out / "queries.jsonl", [q for q in queries if q["_id"] in qids])
    (out / "qrels").mkdir()
    (out / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in rows))
    return out


def assert_within_bound(got, want, dtype) -> None:
    """Scores of the same items computed in different batchings differ by at most the bound that
    `cascade.models.runtime.tolerance` states for the precision they ran at (relative to max(1, |score|))."""
    import numpy as np

    from cascade.models.runtime import tolerance

    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    bound = tolerance(dtype) * np.maximum(1.0, np.abs(want))
    assert np.all(np.abs(got - want) <= bound), f"max change {np.abs(got - want).max():.3g} over the bound"


def assert_same_order_beyond_bound(ids_a, scores_a, ids_b, scores_b, dtype) -> None:
    """Two rankings agree on every pair of shared items whose scores are further apart than twice the bound:
    only near-ties may swap."""
    from cascade.models.runtime import tolerance

    b = dict(zip(list(ids_b), list(scores_b)))
    shared = [(i, s) for i, s in zip(list(ids_a), list(scores_a)) if i in b]
    for x, (i, si) in enumerate(shared):
        for j, sj in shared[x + 1:]:
            if abs(si - sj) > 2 * tolerance(dtype) * max(1.0, abs(si), abs(sj)):
                assert (si > sj) == (b[i] > b[j]), f"{i} and {j} swapped although {si:.4g} vs {sj:.4g}"


def make_cross_encoder(out: Path, num_labels: int = 1, seed: int = 0, layers: int = 2) -> Path:
    """A randomly initialised small BERT sequence classifier with MiniLM's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from cascade.models.hub import DEFAULT_ENCODER, bundled_path

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(bundled_path(DEFAULT_ENCODER))).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_ce(tmp_path_factory) -> Path:
    return make_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="session")
def scifact() -> Path:
    path = BEIR / "scifact"
    if not (path / "corpus.jsonl.gz").is_file():
        pytest.fail(f"SciFact not found at {path}: the tests need ../shared/data/beir beside the repo")
    return path


DOCS = [
    {"id": "rl-1", "title": "Rate limiting", "text": "Rate limiting reduces tail latency by shedding excess requests."},
    {"id": "rl-2", "title": "Retries", "text": "Rate limiting increases latency under load when clients retry fast."},
    {"id": "c-1", "title": "Cache hit", "text": "A cache hit avoids the database round trip entirely."},
    {"id": "c-2", "title": "Cache miss", "text": "A cache miss adds a database round trip plus the cache lookup."},
    {"id": "n-1", "title": "Vitamin D", "text": "Sunlight lets the skin make vitamin D, which helps bones absorb calcium."},
    {"id": "s-1", "title": "Tides", "text": "The Moon's gravity raises tides in the oceans twice a day."},
]


@pytest.fixture
def docs_jsonl(tmp_path) -> Path:
    return write_jsonl(tmp_path / "docs.jsonl", DOCS)


@pytest.fixture(scope="session")
def small_index(tmp_path_factory) -> Path:
    """An index of DOCS built once through the CLI, shared read-only by search tests."""
    from cascade.cli import main

    tmp = tmp_path_factory.mktemp("small")
    src = write_jsonl(tmp / "docs.jsonl", DOCS)
    assert main(["index", str(src), "--out", str(tmp / "idx"), "--quiet"]) == 0
    return tmp / "idx"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real `redis-server` on a free loopback port, no persistence; stop() simulates an outage."""

    def __init__(self, tmp: Path):
        import shutil
        import subprocess
        import time

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


class Server:
    """`cascade serve ARGS` as its own process on a free loopback port, up when constructed."""

    def __init__(self, *args: str, env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "cascade.cli", "serve", *args, "--port", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                pytest.fail(f"cascade serve exited: {self.proc.stdout.read()}")
        self.stop()
        pytest.fail("cascade serve did not come up")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return out
