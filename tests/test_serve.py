"""The HTTP service: every route and error, auth, micro-batching, reload under traffic, Redis shared by two
servers, and a fuzz pass with no 5xx. In-process tests use the real app; process tests run `cascade serve`."""

import asyncio
import json
import signal
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascade import Cascade, CrossEncoder
from cascade.serve.app import ServeConfig, create_app, truncated_documents
from cascade.serve.batcher import Batcher
from tests.conftest import DOCS, Server, assert_within_bound, free_port, write_jsonl

QUERY = "does rate limiting increase latency"


@pytest.fixture(scope="module")
def ce(tiny_ce):
    # the precision this process runs at (CASCADE_PRECISION or the CPU's), like the CLI the tests compare with
    return CrossEncoder(str(tiny_ce))


def make_client(ce, small_index=None, **config) -> TestClient:
    engine = Cascade.load(small_index, reranker=ce) if small_index else None
    app = create_app(ce, engine, ServeConfig(index=small_index, **config))
    return TestClient(app)


@pytest.fixture(scope="module")
def client(ce, small_index):
    with make_client(ce, small_index, max_documents=5, max_body_bytes=20_000) as c:
        yield c


def test_rerank_speaks_the_cohere_shape(client, ce):
    docs = ["Rate limiting increases latency under load.", {"id": "b", "text": "Tides follow the Moon."},
            "Caches avoid round trips."]
    r = client.post("/rerank", json={"model": "rerank-english-v3.0", "query": QUERY, "documents": docs,
                                     "top_n": 2, "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    texts = [d if isinstance(d, str) else d["text"] for d in docs]
    want = ce.predict([(QUERY, t) for t in texts], raw_scores=True)
    assert [x["index"] for x in body["results"]] == np.argsort(-want)[:2].tolist()
    for x in body["results"]:  # in [0, 1] like Cohere's, so thresholds carry over; raw_scores gives logits
        assert x["relevance_score"] == pytest.approx(1 / (1 + np.exp(-want[x["index"]])), abs=1e-5)
        assert x["document"]["text"] == texts[x["index"]]
    raw = client.post("/rerank", json={"query": QUERY, "documents": docs, "raw_scores": True}).json()
    assert [x["relevance_score"] for x in raw["results"]] == pytest.approx(sorted(want.tolist(), reverse=True),
                                                                            abs=1e-5)
    assert body["model"] == ce.model_id and body["timings_ms"]["rerank"] > 0
    assert body["meta"]["truncated_documents"] == []
    bare = client.post("/rerank", json={"query": QUERY, "documents": texts}).json()
    assert len(bare["results"]) == 3 and "document" not in bare["results"][0]


def test_cohere_sdks_v1_and_v2_work_unchanged(client, ce):
    """The real Cohere SDKs post to /v1/rerank and /v2/rerank and parse our answer; a top_n larger than the
    documents (LangChain's default 3, LlamaIndex's 2) returns them all, as Cohere does."""
    import cohere

    texts = ["Rate limiting increases latency under load.", "Tides follow the Moon."]
    want = np.argsort(-ce.predict([(QUERY, t) for t in texts], raw_scores=True)).tolist()
    v1 = cohere.Client(api_key="unused", base_url=str(client.base_url), httpx_client=client)
    got = v1.rerank(model="rerank-english-v3.0", query=QUERY, documents=texts, top_n=3, return_documents=True)
    assert [r.index for r in got.results] == want and got.results[0].document.text == texts[want[0]]
    assert got.id and 0 < len(got.results) == 2
    v2 = cohere.ClientV2(api_key="unused", base_url=str(client.base_url), httpx_client=client)
    got = v2.rerank(model="rerank-v3.5", query=QUERY, documents=texts, top_n=1)
    assert [r.index for r in got.results] == want[:1]
    logit = float(ce.predict([(QUERY, texts[want[0]])], raw_scores=True)[0])
    assert got.results[0].relevance_score == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-5)
    metrics = client.get("/metrics").text
    assert 'route="/v1/rerank"' in metrics and 'route="/v2/rerank"' in metrics


def test_an_over_long_query_is_refused_by_name(ce, small_index):
    """The bound is the engine's (MAX_QUERY_CHARS): a search query, not a document."""
    with make_client(ce, small_index) as c:
        for route in ("/rerank", "/search"):
            r = c.post(route, json={"query": "tides " * 4000, "documents": ["a"]} if route == "/rerank" else
                       {"query": "tides " * 4000})
            assert r.status_code == 422 and r.json()["field"] == "query" and "at most 20000" in r.json()["message"]


def test_rerank_speaks_tei_when_sent_texts(client, ce):
    """TEI's request ({"query", "texts"}) gets TEI's answer: a bare list of {index, score[, text]}, sigmoid
    scores unless raw_scores."""
    texts = ["Rate limiting increases latency under load.", "Tides follow the Moon."]
    logits = ce.predict([(QUERY, t) for t in texts], raw_scores=True)
    body = client.post("/rerank", json={"query": QUERY, "texts": texts, "return_text": True}).json()
    assert [x["index"] for x in body] == np.argsort(-logits).tolist()
    for x in body:
        assert x["score"] == pytest.approx(1 / (1 + np.exp(-logits[x["index"]])), abs=1e-5) and 0 < x["score"] < 1
        assert x["text"] == texts[x["index"]]
    raw = client.post("/rerank", json={"query": QUERY, "texts": texts, "raw_scores": True, "truncate": True}).json()
    assert [x["score"] for x in raw] == pytest.approx(sorted(logits.tolist(), reverse=True), abs=1e-5)
    assert "text" not in raw[0]
    for both in ({"query": QUERY, "texts": texts, "documents": texts}, {"query": QUERY}):
        r = client.post("/rerank", json=both)
        assert r.status_code == 422 and r.json()["field"] == "documents" and "one of the two" in r.json()["message"]


def test_over_long_documents_are_truncated_and_reported(ce, small_index):
    with make_client(ce) as c:  # works without an index
        long_doc = "latency " * 2000
        body = c.post("/rerank", json={"query": QUERY, "documents": ["short", long_doc]}).json()
    assert body["meta"]["truncated_documents"] == [1] and body["meta"]["max_tokens"] == ce.max_length


def test_document_and_id_lengths_are_bounded_by_name(ce):
    with make_client(ce, max_body_bytes=4 * 2**20) as c:
        for doc, field in (("x" * 1_000_001, "documents.0"), ({"text": "x" * 1_000_001}, "documents.0.text"),
                           ({"id": "i" * 1001, "text": "ok"}, "documents.0.id")):
            r = c.post("/rerank", json={"query": "q", "documents": [doc]})
            assert r.status_code == 422 and r.json()["field"] == field, r.text
            assert "characters long; at most" in r.json()["message"]
        assert c.post("/rerank", json={"query": "q", "documents": ["x" * 1_000_000]}).status_code == 200


@pytest.mark.parametrize("payload, status, field, words", [
    ({"query": "  ", "documents": ["a"]}, 422, "query", "query is empty"),
    ({"query": "q", "documents": []}, 422, "documents", "at least 1"),
    ({"query": "q", "documents": ["a"] * 6}, 422, "documents", "at most 5"),
    ({"query": "q", "documents": ["a", "b"], "top_n": 0}, 422, "top_n", "at least 1"),
    ({"query": "q", "documents": ["a", "b"], "top_n": -2}, 422, "top_n", "at least 1"),
    ({"query": 5, "documents": ["a"]}, 422, "query", "string"),
    ({"query": "q", "documents": "a"}, 422, "documents", "list"),
    ({"query": "q", "documents": [{"id": "x"}]}, 422, "documents.0", ""),
    ({"documents": ["a"]}, 422, "query", "required"),
    ({"query": "q", "texts": []}, 422, "texts", "at least 1"),
])
def test_rerank_refuses_bad_input_naming_the_field(client, payload, status, field, words):
    r = client.post("/rerank", json=payload)
    assert r.status_code == status, r.text
    assert r.json()["field"].startswith(field) and words in r.json()["message"]


@pytest.mark.parametrize("body, field", [
    (b'{"query": "tides\\ud800", "documents": ["a"]}', "query"),
    (b'{"query": "q", "documents": ["a", "\\udfff b"]}', "documents.1"),
    (b'{"query": "q", "documents": [{"id": "\\ud800", "text": "a"}]}', "documents.0"),
])
def test_lone_surrogates_are_refused_by_name(client, body, field):
    """JSON escapes can carry lone UTF-16 surrogates, which no tokenizer takes: a 422, never a 500."""
    r = client.post("/rerank", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith(field) and "lone surrogate" in r.json()["message"]
    r = client.post("/search", content=b'{"query": "\\ud800"}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "query"


def test_one_failing_request_does_not_fail_its_batch_mates(tiny_ce):
    """Requests coalesced into one model call: if the call fails, each is scored alone, so only the bad
    one gets the error."""
    class Picky(CrossEncoder):
        def encode(self, pairs):
            if any("poison" in d for _, d in pairs):
                raise ValueError("this document poisons the model")
            return super().encode(pairs)

    picky = Picky(str(tiny_ce), warm_up=False)
    batcher = Batcher(picky, window_ms=200)
    docs = [["tides", "moon"], ["poison"], ["caches", "latency", "load"]]

    async def fire():
        return await asyncio.gather(*[batcher.score([(QUERY, d) for d in ds]) for ds in docs],
                                    return_exceptions=True)

    calls = []
    batcher.on_batch = lambda requests, pairs: calls.append(requests)
    try:
        good, bad, other = asyncio.run(fire())
    finally:
        batcher.close()
    assert calls == [3]  # they really shared the failing call
    assert isinstance(bad, ValueError) and "poisons" in str(bad)
    assert_within_bound(good, picky.predict([(QUERY, d) for d in docs[0]], raw_scores=True), picky.dtype)
    assert_within_bound(other, picky.predict([(QUERY, d) for d in docs[2]], raw_scores=True), picky.dtype)


def test_body_level_errors(client):
    r = client.post("/rerank", content=b'{"query": "caf\xe9", "documents": ["a"]}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and "UTF-8" in r.json()["message"]
    r = client.post("/rerank", json={"query": "q", "documents": ["x" * 30_000]})
    assert r.status_code == 413 and "limit" in r.json()["message"]
    r = client.post("/rerank", content=b'{"query": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["message"].startswith("request body is not valid JSON (")
    assert client.get("/nowhere").json() == {"message": "Not Found"}  # one error shape, the router's own included
    assert client.get("/rerank").json() == {"message": "Method Not Allowed"}


def test_search_takes_every_setting_and_refuses_bad_ones_alike(client):
    from cascade.settings import NAMES

    body = {"query": QUERY, "retrieve": 6, "rerank_depth": 3, "top": 4, "fusion": "weighted", "alpha": 0.3,
            "blend": 0, "budget_ms": None, "batch_size": 2, "late_depth": 0, "llm_depth": 0}
    assert set(body) - {"query"} == set(NAMES)
    r = client.post("/search", json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["hits"]) == 4 and r.json()["rerank"]["scored"] == 3
    # the same kind of mistake gets the same answer, whichever depth it is
    for depth in ("rerank_depth", "late_depth", "llm_depth"):
        r = client.post("/search", json={"query": QUERY, "retrieve": 2, "rerank_depth": 0, depth: 3})
        assert r.status_code == 422 and r.json()["field"] == "retrieve", r.text
        assert f"retrieve (2) must be >= {depth} (3)" in r.json()["message"]
    r = client.post("/context", json={"query": QUERY, "fusion": "max"})
    assert r.status_code == 422 and r.json()["field"] == "fusion" and "unknown fusion" in r.json()["message"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]["properties"]
    assert "first-stage candidates" in schema["retrieve"]["description"]


def test_search_returns_the_cli_json(client, small_index, tiny_ce, capsys):
    from cascade.cli import main

    r = client.post("/search", json={"query": QUERY, "retrieve": 6, "rerank_depth": 4, "top": 5, "budget_ms": None})
    assert r.status_code == 200, r.text
    body = r.json()
    assert main(["search", str(small_index), QUERY, "--reranker", str(tiny_ce), "--retrieve", "6", "--rerank-depth",
                 "4", "--top", "5", "--budget-ms", "none", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert set(body) == set(cli) == {"query", "hits", "timings_ms", "rerank", "degraded", "degraded_reason", "llm"}
    assert set(body["hits"][0]) == set(cli["hits"][0]) and set(body["rerank"]) == set(cli["rerank"])
    assert {h["id"] for h in body["hits"]} == {h["id"] for h in cli["hits"]}
    assert len(body["hits"]) == 5 and body["degraded"] is False
    texts = {p.id: p.text for p in Cascade.load(small_index, reranker=None).index.passages}
    assert all(h["text"] == texts[h["id"]] for h in body["hits"] + cli["hits"])  # what a RAG retriever needs
    assert body["rerank"]["scored"] == 4
    # an uncached query (a cached one needs no time at all) with no time for any batch
    degraded = client.post("/search", json={"query": "vitamin d from sunlight", "budget_ms": 0, "retrieve": 6,
                                            "rerank_depth": 4}).json()
    assert degraded["degraded"] is True and degraded["rerank"]["scored"] == 0
    assert degraded["degraded_reason"].startswith("rerank: latency budget: scored 0 of 4")
    for bad, field in (({"query": QUERY, "retrieve": 2, "rerank_depth": 4}, "retrieve"),
                       ({"query": QUERY, "top": 0}, "top"), ({"query": QUERY, "colour": "red"}, "colour"),
                       ({"query": QUERY, "budget_ms": -1}, "budget_ms")):
        r = client.post("/search", json=bad)
        assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_context_returns_the_cli_json_within_budget(client, small_index, tiny_ce, capsys):
    from cascade.cli import main

    r = client.post("/context", json={"query": QUERY, "retrieve": 6, "rerank_depth": 4, "top": 6, "max_tokens": 60,
                                      "budget_ms": None})
    assert r.status_code == 200, r.text
    body = r.json()
    assert main(["context", str(small_index), QUERY, "--reranker", str(tiny_ce), "--retrieve", "6", "--rerank-depth",
                 "4", "--top", "6", "--max-tokens", "60", "--budget-ms", "none", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert body == cli
    assert 0 < body["tokens"] <= 60 and body["sources"][0]["number"] == 1 and body["dropped"]
    r = client.post("/context", json={"query": QUERY, "max_tokens": 0})
    assert r.status_code == 422 and r.json()["field"] == "max_tokens"
    r = client.post("/search", json={"query": QUERY, "late_depth": 3, "rerank_depth": 2})  # no token vectors here
    assert r.status_code == 400 and "--late-interaction" in r.json()["message"]


def test_search_without_an_index_is_404(ce):
    with make_client(ce) as c:
        r = c.post("/search", json={"query": "q"})
        assert r.status_code == 404 and "cascade serve INDEX_DIR" in r.json()["message"]
        assert c.get("/health").json()["index"] is None


def test_an_index_overwritten_in_place_is_refused_not_read(ce, small_index, tmp_path):
    """`cp` over a served file would give wrong results or SIGBUS the server: it answers 503 instead, until a
    reload opens the files afresh."""
    import shutil

    copy = shutil.copytree(small_index, tmp_path / "idx")
    with make_client(ce, copy) as c:
        assert c.post("/search", json={"query": QUERY}).status_code == 200
        manifest = json.loads((copy / "manifest.json").read_text())
        vectors = copy / manifest["data"] / "shard-000" / "dense" / "vectors.npy"
        vectors.write_bytes(vectors.read_bytes())  # rewritten in place, as cp does
        for route in ("/search", "/context"):
            r = c.post(route, json={"query": QUERY})
            assert r.status_code == 503 and "shard-000/dense/vectors.npy" in r.json()["message"]
        assert c.post("/admin/reload").status_code == 200
        assert c.post("/search", json={"query": QUERY}).status_code == 200


def test_health_answers_while_searches_wait_for_the_model(ce, small_index):
    """A liveness probe must not queue behind searches: hold the model and fill the worker pool first."""
    app = create_app(ce, Cascade.load(small_index, reranker=ce), ServeConfig(index=small_index))
    lock = app.state.batcher.model_lock

    async def probe():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as c:
            lock.acquire()
            try:
                searches = [asyncio.create_task(c.post("/search", json={"query": QUERY, "budget_ms": None}))
                            for _ in range(48)]  # more than the shared pool's 40 threads
                await asyncio.sleep(1.0)
                health = await asyncio.wait_for(c.get("/health"), timeout=30)
            finally:
                lock.release()
            return health, await asyncio.gather(*searches)

    try:
        health, searches = asyncio.run(probe())
    finally:
        app.state.batcher.close()
    assert health.status_code == 200 and health.json()["cache"]["reachable"] is True
    assert {r.status_code for r in searches} == {200}


def test_a_full_queue_answers_503_at_once_and_ready_says_so(ce, small_index):
    """Past --max-queue, model-bound requests are refused with Retry-After instead of waiting without bound."""
    app = create_app(ce, Cascade.load(small_index, reranker=ce), ServeConfig(index=small_index, max_queue=3))
    lock = app.state.batcher.model_lock

    async def overload():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as c:
            lock.acquire()
            try:
                waiting = [asyncio.create_task(c.post("/search", json={"query": QUERY, "budget_ms": None}))
                           for _ in range(3)]
                await asyncio.sleep(0.5)
                refused = await asyncio.wait_for(c.post("/rerank", json={"query": QUERY, "documents": ["a"]}), 10)
                busy = await c.get("/ready")
            finally:
                lock.release()
            done = await asyncio.gather(*waiting)
            return refused, busy, done, await c.get("/ready")

    try:
        refused, busy, done, idle = asyncio.run(overload())
    finally:
        app.state.batcher.close()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["message"].startswith("busy: 3 requests are waiting for the model")
    assert busy.status_code == 503 and busy.json() == {"ready": False, "queued": 3, "max_queue": 3, "model_busy": True}
    assert [r.status_code for r in done] == [200, 200, 200]
    assert idle.status_code == 200 and idle.json()["queued"] == 0


class LiveServer:
    """The app on a real uvicorn server in this process (so a test can hold its model lock)."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{self.server.config.port}"

    def hang_up_on(self, path: str, body: dict, after_s: float) -> None:
        """Send a request on a raw socket and close it after `after_s`, unanswered."""
        import socket

        data = json.dumps(body).encode()
        with socket.create_connection(("127.0.0.1", self.server.config.port)) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            time.sleep(after_s)

    def abandoned(self, at_least: int, wait_s: float = 10) -> float:
        counter, deadline = self.app.state.metrics.abandoned, time.time() + wait_s
        while counter._value.get() < at_least and time.time() < deadline:
            time.sleep(0.05)
        return counter._value.get()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.app.state.batcher.close()


def test_a_request_whose_client_left_while_it_waited_is_never_run(ce, small_index):
    live = LiveServer(create_app(ce, Cascade.load(small_index, reranker=ce), ServeConfig(index=small_index)))
    lock = live.app.state.batcher.model_lock
    try:
        lock.acquire()  # the model is busy: the search waits
        live.hang_up_on("/search", {"query": QUERY}, after_s=0.5)
        time.sleep(0.5)  # the client has gone while the search still waits
        lock.release()
        assert live.abandoned(1) == 1
        r = httpx.post(live.base + "/search", json={"query": QUERY}, timeout=60)
        assert r.status_code == 200 and live.abandoned(1) == 1  # a client that stays is served
    finally:
        live.stop()


def test_reranking_for_a_client_that_left_stops_at_the_next_batch(tiny_ce):
    class Sleepy(CrossEncoder):
        """The real tiny model, 0.3 s a batch: slow enough to hang up in the middle."""

        batches = 0

        def score(self, encoded, batch):
            time.sleep(0.3)
            Sleepy.batches += 1
            return super().score(encoded, batch)

    model = Sleepy(str(tiny_ce), warm_up=False)
    engine = Cascade.build(DOCS, reranker=model, cache=None)
    live = LiveServer(create_app(model, engine, ServeConfig()))
    try:
        live.hang_up_on("/search", {"query": QUERY, "retrieve": 6, "rerank_depth": 6, "batch_size": 1,
                                    "budget_ms": None}, after_s=0.7)
        assert live.abandoned(1) == 1
        time.sleep(0.5)
        assert 1 <= Sleepy.batches < 6  # stopped part-way, not scored to the end for nobody
    finally:
        live.stop()


def test_model_work_runs_on_two_threads_however_many_requests_arrive(tiny_ce):
    """oneDNN keeps buffers per thread that runs a model: a pool of 40 threads would grow 40 sets of them."""
    from concurrent.futures import ThreadPoolExecutor

    class Spied(CrossEncoder):
        threads: set[str] = set()

        def score(self, encoded, batch):
            Spied.threads.add(threading.current_thread().name)
            return super().score(encoded, batch)

    model = Spied(str(tiny_ce), warm_up=False)
    live = LiveServer(create_app(model, Cascade.build(DOCS, reranker=model, cache=None), ServeConfig()))
    try:
        def ask(i: int) -> int:
            path, body = (("/search", {"query": f"{QUERY} {i}", "budget_ms": None}) if i % 2 else
                          ("/rerank", {"query": f"{QUERY} {i}", "documents": [d["text"] for d in DOCS]}))
            return httpx.post(live.base + path, json=body, timeout=60).status_code

        with ThreadPoolExecutor(12) as pool:
            assert list(pool.map(ask, range(24))) == [200] * 24
    finally:
        live.stop()
    assert {name.split("_")[0] for name in Spied.threads} == {"cascade-search", "cascade-model"}


def test_health_metrics_and_docs(client):
    client.post("/rerank", json={"query": "q", "documents": ["a", "b"]})
    before = client.get("/metrics").text
    client.post("/search", json={"query": "the moon and the tides", "budget_ms": 0, "retrieve": 6, "rerank_depth": 4})
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["index"]["passages"] == len(DOCS)
    assert health["cache"]["kind"] == "memory" and health["cache"]["reachable"] is True
    text = client.get("/metrics").text
    assert 'cascade_requests_total{route="/rerank",status="200"}' in text
    assert 'cascade_requests_total{route="/rerank",status="422"}' in text
    assert "cascade_model_batch_pairs_bucket" in text and 'cascade_stage_seconds_count{stage="bm25"}' in text
    assert 'cascade_requests_in_flight{route="/metrics"} 1.0' in text  # itself, while it renders
    assert 'cascade_requests_in_flight{route="/search"} 0.0' in text
    def degraded(metrics: str) -> float:
        return float(next(line.split()[1] for line in metrics.splitlines()
                          if line.startswith("cascade_degraded_responses_total")))

    assert degraded(text) == degraded(before) + 1
    assert client.get("/docs").status_code == 200
    assert "/rerank" in client.get("/openapi.json").json()["paths"]


def test_api_key_guards_every_route_but_health(ce, small_index):
    with make_client(ce, small_index, api_key="s3cret") as c:
        payload = {"query": "q", "documents": ["a"]}
        assert c.post("/rerank", json=payload).status_code == 401
        assert c.post("/rerank", json=payload, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.post("/rerank", json=payload, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/metrics").status_code == 401 and c.post("/admin/reload").status_code == 401
        assert c.get("/health").status_code == 200
        for page in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(page).status_code == 401
            assert c.get(page, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()["info"]["title"] == "Cascade"
    with make_client(ce, small_index, api_key="s3cret", public_docs=True) as c:
        assert c.get("/openapi.json").status_code == 200 and c.get("/docs").status_code == 200
        assert c.post("/rerank", json=payload).status_code == 401


def test_micro_batching_coalesces_concurrent_requests_without_changing_scores(ce):
    app = create_app(ce, None, ServeConfig(batch_window_ms=100))
    calls = []
    observe = app.state.batcher.on_batch
    app.state.batcher.on_batch = lambda requests, pairs: (calls.append(requests), observe(requests, pairs))
    docs = [[f"{d['title']} {d['text']}" for d in DOCS[i:] + DOCS[:i]] for i in range(6)]

    async def fire():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(*[c.post("/rerank", json={"query": QUERY, "documents": d, "raw_scores": True})
                                          for d in docs])

    responses = asyncio.run(fire())
    assert max(calls) > 1 and sum(calls) == len(docs)  # at least two requests shared a model call
    for d, r in zip(docs, responses):
        want = ce.predict([(QUERY, t) for t in d], raw_scores=True)
        got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
        assert_within_bound([got[i] for i in range(len(d))], want, ce.dtype)
    app.state.batcher.close()


def hammer_truncation_checks(tokenizer, ce) -> int:
    """Longest pair `ce.encode` produced while other threads ran truncation checks with `tokenizer`."""
    long_docs = [("tides " * 600) + str(i) for i in range(4)]
    stop = threading.Event()

    def check():
        while not stop.is_set():
            assert truncated_documents(tokenizer, ce.max_length, QUERY, long_docs) == [0, 1, 2, 3]

    threads = [threading.Thread(target=check) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        return max(int(ce.encode([(QUERY, d) for d in long_docs]).lengths.max()) for _ in range(300))
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_truncation_check_cannot_leak_into_the_model_tokenizer(ce):
    """Fast tokenizers keep truncation settings in shared state. Load testing once crashed the model past
    512 positions: the check's untruncated calls raced the model thread's truncated ones. The service
    gives the check its own tokenizer."""
    app = create_app(ce, None, ServeConfig())
    assert app.state.checker is not ce.tokenizer
    assert hammer_truncation_checks(app.state.checker, ce) <= ce.max_length
    app.state.batcher.close()


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.fixed_dictionaries({}, optional={"query": json_values | st.text(max_size=30),
                                                  "documents": json_values | st.lists(st.text(max_size=30), max_size=8),
                                                  "top_n": json_values | st.integers(-3, 10),
                                                  "return_documents": json_values,
                                                  "retrieve": json_values, "rerank_depth": json_values,
                                                  "top": json_values, "budget_ms": json_values,
                                                  "blend": json_values}),
       route=st.sampled_from(["/rerank", "/search", "/context"]))
def test_fuzzed_bodies_never_get_a_5xx(client, body, route):
    r = client.post(route, content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"})
    assert r.status_code < 500, (route, body, r.text)


# -- the real server, as its own process ------------------------------------------------------------------

def test_reload_during_traffic_drops_no_request(tmp_path, tiny_ce):
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    index = tmp_path / "idx"
    Cascade.build(DOCS, index, reranker=None)
    server = Server(str(index), "--reranker", str(tiny_ce))
    statuses, stop = [], threading.Event()

    def traffic():
        with httpx.Client(base_url=server.base, timeout=30) as c:
            while not stop.is_set():
                statuses.append(c.post("/search", json={"query": "glaciers", "rerank_depth": 3}).status_code)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        # served with an index of 80-word passages, the model reads the 128 tokens they need, /rerank too
        r = httpx.post(server.base + "/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)
        assert r.json()["meta"]["max_tokens"] == 128
        time.sleep(0.5)
        new = DOCS + [{"id": "g-1", "title": "Glaciers", "text": "Glaciers carve valleys as they slowly flow."}]
        write_jsonl(src, new)
        Cascade.build(new, index, reranker=None)
        r = httpx.post(server.base + "/admin/reload", timeout=60)
        assert r.status_code == 200 and r.json()["index"]["passages"] == len(new)
        time.sleep(0.5)
        # the first stage's order: the random tiny reranker is only there to load, its order means nothing
        found = httpx.post(server.base + "/search", json={"query": "glaciers carve valleys", "top": 1,
                                                          "rerank_depth": 0}).json()
        assert found["hits"][0]["id"] == "g-1"
        # SIGHUP does the same
        Cascade.build(DOCS, index, reranker=None)
        server.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if httpx.get(server.base + "/health").json()["index"]["passages"] == len(DOCS):
                break
            time.sleep(0.1)
        assert httpx.get(server.base + "/health").json()["index"]["passages"] == len(DOCS)
    finally:
        stop.set()
        worker.join()
        server.stop()
    assert statuses and set(statuses) == {200}, statuses


def test_two_servers_share_scores_through_redis(redis_server, small_index, tiny_ce):
    args = (str(small_index), "--reranker", str(tiny_ce), "--cache", redis_server.url)
    a, b = Server(*args), Server(*args)
    try:
        payload = {"query": QUERY, "retrieve": 6, "rerank_depth": 4, "budget_ms": None}
        first = httpx.post(a.base + "/search", json=payload, timeout=30).json()
        second = httpx.post(b.base + "/search", json=payload, timeout=30).json()
        assert first["rerank"]["cache_hits"] == 0 and second["rerank"]["cache_hits"] == 4
        assert [h["id"] for h in first["hits"]] == [h["id"] for h in second["hits"]]
        assert httpx.get(b.base + "/health").json()["cache"] == {"kind": "redis", "url": redis_server.url,
                                                                 "reachable": True}
    finally:
        a.stop()
        b.stop()


def test_sigterm_finishes_in_flight_requests():
    server = Server("--reranker", "cascade-reranker", "--no-micro-batching")
    docs = ["tides " * 300] * 60  # ~1 s of real model work
    result = {}

    def slow_request():
        result["response"] = httpx.post(server.base + "/rerank", json={"query": "tides", "documents": docs}, timeout=60)

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(0.3)  # the request is in flight
    server.proc.send_signal(signal.SIGTERM)
    worker.join()
    assert result["response"].status_code == 200 and len(result["response"].json()["results"]) == 60
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained


def test_public_bind_without_key_warns(tiny_ce):
    server = Server("--host", "0.0.0.0", "--reranker", str(tiny_ce), env={"CASCADE_API_KEY": ""})
    assert "serving on 0.0.0.0 without --api-key" in server.stop()


def test_max_connections_bounds_what_idle_clients_can_hold(tiny_ce):
    import socket

    server = Server("--reranker", str(tiny_ce), "--max-connections", "3")
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]  # slow clients, no request
    try:
        time.sleep(0.5)
        assert httpx.get(server.base + "/health", timeout=10).status_code == 503
    finally:
        for s in idle:
            s.close()
    time.sleep(0.5)
    assert httpx.get(server.base + "/health", timeout=10).status_code == 200
    server.stop()


def read_all(sock) -> bytes:
    """Everything the server sends until it closes the connection (or 30 s pass)."""
    sock.settimeout(30)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_read_timeout_closes_connections_that_do_not_send_a_request(tiny_ce):
    import socket

    server = Server("--reranker", str(tiny_ce), "--read-timeout-s", "1", "--max-connections", "3")
    try:
        silent = socket.create_connection(("127.0.0.1", server.port))  # sends nothing
        slow_head = socket.create_connection(("127.0.0.1", server.port))
        slow_head.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        slow_body = socket.create_connection(("127.0.0.1", server.port))
        slow_body.sendall(b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"query\": ")  # 10 of 100 bytes
        try:
            for sock in (silent, slow_head):
                answer = read_all(sock)
                assert answer.startswith(b"HTTP/1.1 408 ") and b"--read-timeout-s" in answer
            assert b" 200 " not in read_all(slow_body)  # closed, the app never got a whole body
            assert httpx.get(server.base + "/health", timeout=10).status_code == 200  # their connections are free
        finally:
            for sock in (silent, slow_head, slow_body):
                sock.close()
        with socket.create_connection(("127.0.0.1", server.port)) as keep:  # a prompt client keeps its connection
            for _ in range(2):
                keep.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                keep.settimeout(10)
                answer = b""
                while not answer.endswith(b"}"):  # /health's JSON body closes the response
                    answer += keep.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200 ")
                time.sleep(1.5)  # idle past the read timeout between requests: keep-alive (5 s) decides, not it
    finally:
        log = server.stop()  # also when an assertion fails: no server process left behind
    assert "Traceback" not in log
