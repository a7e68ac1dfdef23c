"""Score caching: a reranker's score depends only on (model, query, passage text), so key on exactly that.

The key hashes the reranker's signature (model id and truncation length), the normalised query and
the passage's content digest, so an index update that changes a passage changes its key: a stale
score can never be served. `MemoryCache` is an in-process LRU (the default); `RedisCache` shares
scores across processes and restarts, and when Redis is unreachable searches carry on uncached
after one warning.
"""

from __future__ import annotations

import hashlib
import logging
import time
import unicodedata
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Sequence, Union
from urllib.parse import urlparse

from cascade.errors import CascadeError

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 7 * 24 * 3600
RETRY_AFTER_S = 30.0  # how long an unreachable Redis is left alone before the next attempt


def normalise_query(query: str) -> str:
    """Queries that differ only in Unicode form or spacing share cached scores (case is kept: cased
    models score it)."""
    return " ".join(unicodedata.normalize("NFKC", query).split())


def cache_key(signature: str, query: str, digest: str) -> str:
    raw = f"{signature}\x00{normalise_query(query)}\x00{digest}".encode("utf-8")
    return "cascade:score:" + hashlib.blake2b(raw, digest_size=16).hexdigest()


class ScoreCache(ABC):
    @abstractmethod
    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        """The cached scores among `keys` (missing keys are simply absent)."""

    @abstractmethod
    def put_many(self, scores: dict[str, float]) -> None: ...

    @abstractmethod
    def health(self) -> dict:
        """What a health check reports: the kind of cache and whether it is reachable."""


class MemoryCache(ScoreCache):
    """Least-recently-used scores in this process (100k entries is ~15 MB)."""

    def __init__(self, max_items: int = 100_000):
        if max_items < 1:
            raise CascadeError(f"cache size must be >= 1, got {max_items}")
        self.max_items = max_items
        self._items: OrderedDict[str, float] = OrderedDict()

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        found = {}
        for k in keys:
            if k in self._items:
                self._items.move_to_end(k)
                found[k] = self._items[k]
        return found

    def put_many(self, scores: dict[str, float]) -> None:
        self._items.update(scores)
        for k in scores:
            self._items.move_to_end(k)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def health(self) -> dict:
        return {"kind": "memory", "reachable": True, "entries": len(self._items)}


class RedisCache(ScoreCache):
    """Scores in Redis with a TTL, one round trip per lookup (MGET) and per store (pipelined SETs)."""

    def __init__(self, url: str, ttl_s: int = DEFAULT_TTL_S, timeout_s: float = 0.25):
        try:
            import redis
        except ImportError:
            raise CascadeError("a Redis cache needs the redis client: pip install 'cascade-retrieval[redis]'") from None
        if ttl_s < 1:
            raise CascadeError(f"cache TTL must be >= 1 second, got {ttl_s}")
        self.url, self.ttl_s = url, ttl_s
        try:
            self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        except ValueError as e:
            raise CascadeError(f"bad Redis URL {url!r}: {e}") from None
        self._errors = (redis.RedisError, OSError)
        self._down_since: float | None = None
        self._retry_at = 0.0

    def _call(self, fn, default):
        """Run one Redis operation; on failure warn once per outage and skip Redis for RETRY_AFTER_S."""
        now = time.monotonic()
        if self._down_since is not None and now < self._retry_at:
            return default
        try:
            result = fn()
        except self._errors as e:
            if self._down_since is None:
                log.warning("score cache %s unreachable (%s): searching uncached until it is back",
                            self.url, str(e).splitlines()[0] if str(e) else type(e).__name__)
                self._down_since = now
            self._retry_at = now + RETRY_AFTER_S
            return default
        if self._down_since is not None:
            log.warning("score cache %s is reachable again", self.url)
            self._down_since = None
        return result

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        if not keys:
            return {}
        values = self._call(lambda: self._client.mget(list(keys)), None) or []
        return {k: float(v) for k, v in zip(keys, values) if v is not None}

    def put_many(self, scores: dict[str, float]) -> None:
        if not scores:
            return

        def store():
            pipe = self._client.pipeline(transaction=False)
            for k, v in scores.items():
                pipe.set(k, repr(float(v)), ex=self.ttl_s)
            pipe.execute()

        self._call(store, None)

    def health(self) -> dict:
        reachable = bool(self._call(self._client.ping, False))
        return {"kind": "redis", "url": self.url, "reachable": reachable}


CacheSpec = Union[str, ScoreCache, None]


def open_cache(spec: CacheSpec, ttl_s: int = DEFAULT_TTL_S) -> ScoreCache | None:
    """`None`/"none" -> no cache; "memory" -> in-process LRU; "redis://host:port/db" -> Redis."""
    if spec is None or isinstance(spec, ScoreCache):
        return spec
    if not isinstance(spec, str):
        raise CascadeError(f"cache must be 'memory', 'none' or a redis:// URL, got {spec!r}")
    if spec.lower() in ("none", "off"):
        return None
    if spec.lower() == "memory":
        return MemoryCache()
    if urlparse(spec).scheme in ("redis", "rediss", "unix"):
        return RedisCache(spec, ttl_s=ttl_s)
    raise CascadeError(f"unknown cache {spec!r}: use 'memory', 'none' or redis://host:port/db")
