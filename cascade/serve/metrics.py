"""Prometheus metrics for the service, in a registry of its own (two apps in one process never collide)."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROUTES = {"/rerank", "/v1/rerank", "/v2/rerank", "/search", "/context", "/health", "/ready", "/metrics", "/admin/reload",
          "/docs", "/redoc", "/openapi.json"}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("cascade_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("cascade_request_seconds", "Request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.stages = Histogram("cascade_stage_seconds", "Time per cascade stage", ["stage"], buckets=LATENCY_BUCKETS,
                                registry=r)
        self.batch_pairs = Histogram("cascade_model_batch_pairs", "Pairs per model call (after micro-batching)",
                                     buckets=(1, 8, 16, 30, 32, 64, 100, 128, 256, 512, 1024), registry=r)
        self.batch_requests = Histogram("cascade_model_batch_requests", "Requests coalesced into one model call",
                                        buckets=(1, 2, 4, 8, 16, 32), registry=r)
        self.cache_hits = Counter("cascade_cache_hits", "Reranker scores served from the cache", registry=r)
        self.cache_misses = Counter("cascade_cache_misses", "Reranker scores computed", registry=r)
        self.degraded = Counter("cascade_degraded_responses", "Searches cut short by their latency budget",
                                registry=r)
        self.abandoned = Counter("cascade_abandoned_requests", "Requests given up because the client left: before "
                                 "the model was free, or between reranking batches", registry=r)
        self.in_flight = Gauge("cascade_requests_in_flight", "Requests being served now, by route", ["route"],
                               registry=r)
        self.content_type = CONTENT_TYPE_LATEST

    def route(self, path: str) -> str:
        return path if path in ROUTES else "other"

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        route = self.route(path)
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stages.labels(stage).observe(seconds)

    def observe_batch(self, requests: int, pairs: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_pairs.observe(pairs)

    def observe_search(self, result) -> None:
        for stage, ms in result.timings_ms.items():
            self.stages.labels(stage).observe(ms / 1000)
        hits = result.rerank.get("cache_hits", 0)
        self.cache_hits.inc(hits)
        self.cache_misses.inc(max(0, result.rerank.get("scored", 0) - hits))
        if result.degraded:
            self.degraded.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Counted:
    """ASGI middleware: every request counted by route and status, timed, and gauged while in flight. Plain
    ASGI rather than Starlette's BaseHTTPMiddleware, which hides a client's disconnect from the routes (they
    could not give up work for a client that has gone)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        in_flight = self.metrics.in_flight.labels(self.metrics.route(scope["path"]))
        in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            in_flight.dec()
            self.metrics.observe_request(scope["path"], status[0], time.perf_counter() - start)
