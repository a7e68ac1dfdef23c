"""The HTTP service: a Cohere/Jina-compatible `/rerank`, the full cascade at `/search`, health and metrics.

`/rerank` takes and returns the Cohere/Jina rerank shapes, so their clients work by changing the base
URL. Model work runs on two threads, never the event loop nor a pool (oneDNN keeps buffers per thread that
runs a model): reranks on the micro-batcher's, searches on one search thread holding the same model lock. The
index can be swapped while serving (`POST /admin/reload` or SIGHUP): a new engine is built beside the old
one and replaces it in one assignment, so in-flight searches finish on the index they started with.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import logging
import math
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cascade._version import __version__
from cascade.errors import CascadeError
from cascade.fileio import Stamps
from cascade.index import Index
from cascade.pipeline import Cascade
from cascade.rerank import budget
from cascade.rerank.base import Reranker
from cascade.rerank.factory import RerankerChoice
from cascade.rerank.pairs import WORD_CAP, cut
from cascade.serve.batcher import Batcher
from cascade.serve.limits import BodyLimits
from cascade.serve.metrics import Counted, Metrics
from cascade.serve.requests import (
    UNION_BRANCHES,
    UNION_MISMATCHES,
    ContextRequest,
    Document,
    RerankRequest,
    SearchRequest,
    search_settings,
)
from cascade.settings import SettingError

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    index: Path | None = None
    api_key: str | None = None
    max_documents: int = 1000
    max_body_bytes: int = 8 * 2**20
    micro_batching: bool = True
    batch_window_ms: float = 5.0
    max_batch_pairs: int = 256
    tokenizer: str | None = None  # what /context counts its budget in (default: the index encoder's)
    public_docs: bool = False  # /docs, /redoc and /openapi.json without the API key
    max_queue: int = 64  # model-bound requests (waiting or running) past which new ones get 503 + Retry-After


def sigmoid(x: float) -> float:
    """The logistic function without overflow for very negative logits."""
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"message": message, **({"field": field} if field else {})}, status_code=status)


def watched(engine: Cascade | None) -> Stamps | None:
    """Stamps of the files the engine's index memory-mapped, taken as it is served (only a server needs them)."""
    return Stamps(engine.index.data, engine.index.manifest["files"]) if engine is not None else None


def create_app(reranker: Reranker, engine: Cascade | None = None, config: ServeConfig | None = None) -> FastAPI:
    config = config or ServeConfig()
    metrics = Metrics()
    batcher = Batcher(reranker, window_ms=config.batch_window_ms, max_pairs=config.max_batch_pairs,
                      enabled=config.micro_batching, on_batch=metrics.observe_batch)
    state = {"engine": engine, "stamps": watched(engine)}
    health_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cascade-health")
    search_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cascade-search")  # searches wait in its queue
    # fast tokenizers keep truncation settings in shared mutable state: the truncation check gets its own
    # copy, or its untruncated calls could leak into the model thread's truncated ones (a crash past 512)
    checker = copy.deepcopy(getattr(reranker, "tokenizer", None))

    def reload_index() -> dict:
        """Load the index from disk into a new engine that shares the models, then swap it in."""
        if config.index is None:
            raise CascadeError("this server was started without an index")
        old = state["engine"]
        index = Index.load(config.index, verify=True)  # re-hashing runs beside searches, not behind the lock
        with batcher.model_lock:
            fresh = Cascade(index, old.encoder, RerankerChoice(reranker), cache=old.cache)
        state["engine"], state["stamps"] = fresh, watched(fresh)
        log.warning("reloaded index %s: %d passages", config.index, len(fresh.index.passages))
        return fresh.index.manifest["counts"]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(run_in_threadpool(reload_index)))
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP here
            pass
        yield
        batcher.close()
        health_pool.shutdown(wait=False)
        search_pool.shutdown(wait=False)

    guard_docs = bool(config.api_key) and not config.public_docs  # the docs pages follow the key, as every route
    app = FastAPI(title="Cascade", version=__version__, lifespan=lifespan, **(dict.fromkeys(
                      ("docs_url", "redoc_url", "openapi_url")) if guard_docs else {}),
                  description="Hybrid retrieval + cross-encoder reranking. `/rerank` speaks the Cohere/Jina "
                              "rerank API; `/search` runs the full cascade over the served index.")
    app.add_middleware(BodyLimits, max_bytes=config.max_body_bytes)
    app.add_middleware(Counted, metrics=metrics)  # outermost: sees every request, refused bodies included
    app.state.batcher, app.state.metrics, app.state.checker = batcher, metrics, checker

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if errors and errors[0]["type"] == "json_invalid":
            return error(400, f"request body is not valid JSON ({errors[0].get('ctx', {}).get('error', 'unreadable')})")
        # a document is a string or an object: report what was wrong inside the branch that fits, not "not a string"
        first = next((e for e in errors if e["type"] not in UNION_MISMATCHES), errors[0])
        field = ".".join(str(p) for p in first["loc"] if p != "body" and p not in UNION_BRANCHES and "[" not in str(p))
        message = str(first["msg"]).removeprefix("Value error, ")
        return error(422, f"{field}: {message}" if field else message, field or None)

    @app.exception_handler(SettingError)
    async def bad_setting(request: Request, exc: SettingError) -> JSONResponse:
        return error(422, str(exc), exc.field)

    @app.exception_handler(CascadeError)
    async def refused(request: Request, exc: CascadeError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and the router's own 404/405 alike
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def authorised(request: Request) -> None:
        if not config.api_key:  # None or "" (an unset $CASCADE_API_KEY): no auth
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {config.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorised)]
    queue = {"size": 0}  # model-bound requests admitted and not yet answered (the event loop's own counter)

    async def admitted():
        """A bounded queue: past `max_queue` a request is refused at once (503, Retry-After) instead of waiting
        behind all the others for the model with no bound."""
        if queue["size"] >= config.max_queue:
            raise HTTPException(503, f"busy: {queue['size']} requests are waiting for the model (--max-queue "
                                     f"{config.max_queue}); retry shortly", headers={"Retry-After": "1"})
        queue["size"] += 1
        try:
            yield
        finally:
            queue["size"] -= 1

    bounded = [*auth, Depends(admitted)]

    if guard_docs:
        from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

        @app.get("/openapi.json", dependencies=auth, include_in_schema=False)
        async def openapi() -> dict:
            return app.openapi()

        @app.get("/docs", dependencies=auth, include_in_schema=False)
        async def docs():
            return get_swagger_ui_html(openapi_url="/openapi.json", title="Cascade")

        @app.get("/redoc", dependencies=auth, include_in_schema=False)
        async def redoc():
            return get_redoc_html(openapi_url="/openapi.json", title="Cascade")

    def served(route: str) -> Cascade:
        """The engine, if there is one (404) and its index files are still the ones it opened: a file copied
        over in place (`cp`, `rsync --inplace`) would give wrong results or kill the server with SIGBUS (503)."""
        engine, stamps = state["engine"], state["stamps"]
        if engine is None:
            raise HTTPException(404, f"no index is served: start with `cascade serve INDEX_DIR` to use {route}")
        changed = stamps.changed()
        if changed:
            log.error("index files changed on disk while served: %s", ", ".join(changed))
            raise HTTPException(503, f"the served index's files changed on disk ({', '.join(changed)}); update an "
                                     "index with `cascade index` (atomic), then POST /admin/reload or send SIGHUP")
        return engine

    @app.post("/rerank", dependencies=bounded)
    @app.post("/v1/rerank", dependencies=bounded)
    @app.post("/v2/rerank", dependencies=bounded)
    async def rerank(body: RerankRequest) -> dict | list:
        """Score every document against the query; best first. Cohere/Jina request and response shape, on the
        paths Cohere's v1 and v2 SDKs (and LangChain's and LlamaIndex's Cohere rerankers) post to."""
        if (body.documents is None) == (body.texts is None):
            return error(422, "documents: send `documents` (Cohere/Jina) or `texts` (TEI), one of the two",
                         "documents")
        docs = [d if isinstance(d, Document) else Document(text=d) for d in body.documents or body.texts]
        if len(docs) > config.max_documents:
            return error(422, f"documents: {len(docs)} documents, at most {config.max_documents} per request",
                         "documents")
        if body.top_n is not None and body.top_n < 1:
            return error(422, f"top_n: must be at least 1, got {body.top_n}", "top_n")
        top_n = min(body.top_n or len(docs), len(docs))  # more than there are: all of them, as Cohere answers
        start = time.perf_counter()
        pairs = [(body.query, d.text) for d in docs]
        scores = await batcher.score(pairs)
        order = sorted(range(len(docs)), key=lambda i: -scores[i])[:top_n]
        results = [{"index": i, "relevance_score": float(scores[i]) if body.raw_scores else sigmoid(float(scores[i])),
                    **({"document": {"text": docs[i].text, **({"id": docs[i].id} if docs[i].id else {})}}
                       if body.return_documents else {})} for i in order]
        truncated = await run_in_threadpool(truncated_documents, checker, getattr(reranker, "max_length", None),
                                            body.query, [d.text for d in docs])
        metrics.observe_stage("rerank", time.perf_counter() - start)
        if body.texts is not None:  # TEI answers a bare list, with sigmoid scores unless raw_scores
            return [{"index": i, "score": float(scores[i]) if body.raw_scores else sigmoid(float(scores[i])),
                     **({"text": docs[i].text} if body.return_text else {})} for i in order]
        return {"id": str(uuid.uuid4()), "results": results, "model": reranker.model_id,
                "timings_ms": {"rerank": round((time.perf_counter() - start) * 1000, 2)},
                "meta": {"truncated_documents": truncated, "max_tokens": getattr(reranker, "max_length", None)}}

    async def with_model(request: Request, work):
        """`work()` on the search thread, holding the model lock; given up if the client goes away: unrun while it
        waits (under load most of a request's time is that wait), or at reranking's next batch."""
        gone = threading.Event()

        async def watch() -> None:
            while not gone.is_set():
                if await request.is_disconnected():
                    gone.set()
                    return
                await asyncio.sleep(0.1)

        def run():
            try:
                if gone.is_set():  # it left while this waited in the search thread's queue
                    raise budget.Abandoned
                while not batcher.model_lock.acquire(timeout=0.05):
                    if gone.is_set():
                        raise budget.Abandoned
                token = budget.GONE.set(gone.is_set)  # reranking stops at its next batch once the client has gone
                try:
                    return work()
                finally:
                    budget.GONE.reset(token)
                    batcher.model_lock.release()
            except budget.Abandoned:  # while it waited for the model, or between reranking batches
                metrics.abandoned.inc()
                raise HTTPException(499, "client closed the request") from None

        watcher = asyncio.create_task(watch())
        try:
            return await asyncio.get_running_loop().run_in_executor(search_pool, run)
        finally:
            gone.set()
            watcher.cancel()

    @app.post("/search", dependencies=bounded)
    async def search(body: SearchRequest, request: Request) -> dict:
        """The full cascade over the served index: the same JSON as `cascade search --json`."""
        engine = served("/search")
        settings = search_settings(body)
        result = await with_model(request, lambda: engine.search(body.query, settings))
        metrics.observe_search(result)
        return result.to_dict()  # passage text included: a RAG retriever built on /search needs it

    @app.post("/context", dependencies=bounded)
    async def context(body: ContextRequest, request: Request) -> dict:
        """`/search`, then its passages packed for an LLM prompt: deduplicated, adjacent windows merged, numbered
        sources, at most `max_tokens` tokens of the server's `--tokenizer`. Same JSON as `cascade context --json`."""
        engine = served("/context")

        settings = search_settings(body)
        return (await with_model(request, lambda: engine.context(body.query, max_tokens=body.max_tokens,
                                                                 tokenizer=config.tokenizer, settings=settings))).to_dict()

    @app.get("/health")
    async def health() -> dict:
        """Up, model loaded, index counts, cache reachable. Needs no API key. Its cache check runs on a thread
        of its own: the shared pool fills with searches waiting for the model, and a liveness probe stuck
        behind them (26 s under 64 clients) would restart a busy, healthy server."""
        engine = state["engine"]
        cache = engine.cache if engine is not None else None
        reachable = (await asyncio.get_running_loop().run_in_executor(health_pool, cache.health)
                     if cache is not None else None)
        return {"status": "ok", "model": reranker.model_id,
                "index": engine.index.manifest["counts"] if engine is not None else None, "cache": reachable}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness, apart from liveness (`/health`): 503 while the queue is full, so a balancer sends traffic
        elsewhere. Needs no API key, as probes send none."""
        full = queue["size"] >= config.max_queue
        return JSONResponse({"ready": not full, "queued": queue["size"], "max_queue": config.max_queue,
                             "model_busy": batcher.model_lock.locked()}, status_code=503 if full else 200)

    @app.get("/metrics", dependencies=auth, response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        """Prometheus text format: requests by route and status, stage latencies, batch sizes, cache, degraded."""
        return PlainTextResponse(metrics.render(), media_type=metrics.content_type)

    @app.post("/admin/reload", dependencies=auth)
    async def reload() -> dict:
        """Rebuilt the index with `cascade index`? Swap it in without dropping a request."""
        counts = await run_in_threadpool(reload_index)
        return {"status": "reloaded", "index": counts}

    return app


def truncated_documents(tokenizer, limit: int | None, query: str, texts: list[str]) -> list[int]:
    """Indices of documents cut to fit the model's token budget (only known for tokenizer-based models)."""
    if tokenizer is None or limit is None:
        return []
    words = WORD_CAP * limit  # past that many words a text is cut anyway; never tokenise a huge one whole
    lengths = tokenizer([cut(query, words)] * len(texts), [cut(t, words) for t in texts], truncation=False)["input_ids"]
    return [i for i, ids in enumerate(lengths) if len(ids) > limit]
