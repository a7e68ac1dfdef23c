"""Score caching: keys, LRU, invalidation on index updates, Redis sharing and Redis outages."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from cascade import Cascade, CascadeError, CrossEncoder
from cascade.cli import main
from cascade.rerank.cache import MemoryCache, RedisCache, cache_key, open_cache
from tests.conftest import DOCS


def test_keys_normalise_the_query_and_separate_everything_else():
    key = cache_key("m@256", "vitamin  D\tbones ", "abc")
    assert key == cache_key("m@256", " vitamin D bones", "abc")
    assert key == cache_key("m@256", "vitamin D bones", "abc")
    assert key == cache_key("m@256", "ｖitamin D bones", "abc")  # NFKC: full-width letters
    assert key != cache_key("m@256", "Vitamin D bones", "abc")  # case can change a cased model's score
    assert key != cache_key("m@512", "vitamin D bones", "abc")  # truncation changes scores
    assert key != cache_key("other@256", "vitamin D bones", "abc")
    assert key != cache_key("m@256", "vitamin D bones", "abd")  # passage content changed


def test_memory_cache_evicts_least_recently_used():
    cache = MemoryCache(max_items=2)
    cache.put_many({"a": 1.0, "b": 2.0})
    assert cache.get_many(["a", "zzz"]) == {"a": 1.0}  # touches a
    cache.put_many({"c": 3.0})
    assert cache.get_many(["a", "b", "c"]) == {"a": 1.0, "c": 3.0}
    assert len(cache) == 2


def count_model_calls(monkeypatch, reranker) -> list[int]:
    calls = []
    real = reranker.score

    def counted(encoded, batch):
        calls.append(len(batch))
        return real(encoded, batch)

    monkeypatch.setattr(reranker, "score", counted)
    return calls


def test_repeated_query_is_served_from_cache(tiny_ce, monkeypatch):
    ce = CrossEncoder(str(tiny_ce))
    cascade = Cascade.build(DOCS, reranker=ce)  # in-process LRU by default
    first = cascade.search("does rate limiting increase latency", rerank_depth=5, top=5, budget_ms=None)
    calls = count_model_calls(monkeypatch, ce)
    again = cascade.search("does rate limiting  increase latency ", rerank_depth=5, top=5, budget_ms=None)
    assert calls == [] and again.rerank["cache_hits"] == 5 and first.rerank["cache_hits"] == 0
    assert [(h.id, h.score) for h in again.hits] == [(h.id, h.score) for h in first.hits]
    deeper = cascade.search("does rate limiting increase latency", rerank_depth=6, top=6, budget_ms=None)
    assert calls == [1] and deeper.rerank["cache_hits"] == 5  # only the new candidate is scored


def test_index_update_never_serves_a_stale_score(tiny_ce, tmp_path, monkeypatch):
    ce = CrossEncoder(str(tiny_ce))
    cache = MemoryCache()
    cascade = Cascade.build(DOCS, tmp_path / "idx", reranker=ce, cache=cache)
    before = {h.id: h.score for h in cascade.search("cache hit", rerank_depth=6, top=6, budget_ms=None, blend=0).hits}
    changed = [dict(d, text="A cache hit is served from memory in microseconds.") if d["id"] == "c-1" else d
               for d in DOCS]
    cascade = Cascade.build(changed, tmp_path / "idx", reranker=ce, cache=cache)
    calls = count_model_calls(monkeypatch, ce)
    after = cascade.search("cache hit", rerank_depth=6, top=6, budget_ms=None, blend=0)
    assert calls == [1] and after.rerank["cache_hits"] == 5  # just the edited passage was rescored
    fresh = ce.predict([("cache hit", next(p.content for p in cascade.index.passages if p.id == "c-1"))], raw_scores=True)[0]
    scores = {h.id: h.score for h in after.hits}
    assert scores["c-1"] == pytest.approx(float(fresh), abs=1e-6) and scores["c-1"] != before["c-1"]
    assert all(scores[i] == before[i] for i in scores if i != "c-1")


def test_a_different_truncation_length_is_a_different_key(tiny_ce):
    cache = MemoryCache()
    a = Cascade.build(DOCS, reranker=CrossEncoder(str(tiny_ce), max_length=512), cache=cache)
    b = Cascade.build(DOCS, reranker=CrossEncoder(str(tiny_ce), max_length=16), cache=cache)
    a.search("cache miss", rerank_depth=4, budget_ms=None)
    assert b.search("cache miss", rerank_depth=4, budget_ms=None).rerank["cache_hits"] == 0


def test_bad_cache_specs():
    assert open_cache(None) is None and open_cache("none") is None
    assert isinstance(open_cache("memory"), MemoryCache)
    with pytest.raises(CascadeError, match="unknown cache 'ftp://x'"):
        open_cache("ftp://x")
    with pytest.raises(CascadeError, match="TTL"):
        open_cache("redis://127.0.0.1:1/0", ttl_s=0)
    with pytest.raises(CascadeError, match="cache size"):
        MemoryCache(0)


def test_redis_shares_scores_across_processes(redis_server, tiny_ce):
    writer = RedisCache(redis_server.url, ttl_s=60)
    writer.put_many({"k1": 0.25})
    code = (f"from cascade.rerank.cache import RedisCache; c = RedisCache({redis_server.url!r}); "
            "print(c.get_many(['k1', 'k2'])); c.put_many({'k2': -1.5})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "{'k1': 0.25}"
    assert writer.get_many(["k1", "k2"]) == {"k1": 0.25, "k2": -1.5}
    import redis

    assert 0 < redis.Redis.from_url(redis_server.url).ttl("k1") <= 60
    assert writer.health() == {"kind": "redis", "url": redis_server.url, "reachable": True}

    # two engines (as two server processes would) share reranker scores through Redis
    one = Cascade.build(DOCS, reranker=str(tiny_ce), cache=redis_server.url)
    two = Cascade.build(DOCS, reranker=str(tiny_ce), cache=redis_server.url)
    first = one.search("cache miss", rerank_depth=6, top=6, budget_ms=None)
    second = two.search("cache miss", rerank_depth=6, top=6, budget_ms=None)
    assert first.rerank["cache_hits"] == 0 and second.rerank["cache_hits"] == 6
    assert [h.id for h in first.hits] == [h.id for h in second.hits]
    np.testing.assert_allclose([h.score for h in first.hits], [h.score for h in second.hits], atol=1e-6)


def test_redis_outage_means_uncached_search_and_one_warning(redis_server, tiny_ce, caplog):
    cascade = Cascade.build(DOCS, reranker=str(tiny_ce), cache=redis_server.url)
    baseline = Cascade.build(DOCS, reranker=str(tiny_ce), cache=None)
    cascade.search("vitamin d", rerank_depth=6, budget_ms=None)
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="cascade.rerank.cache"):
        for query in ("tides", "cache miss", "tides"):
            got = cascade.search(query, rerank_depth=6, top=6, budget_ms=None)
            want = baseline.search(query, rerank_depth=6, top=6, budget_ms=None)
            assert [h.id for h in got.hits] == [h.id for h in want.hits]
            assert got.rerank["cache_hits"] == 0 and not got.degraded
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and redis_server.url in warnings[0].getMessage()
    assert cascade.cache.health()["reachable"] is False


def test_cli_cache_flag_with_redis(redis_server, small_index, tiny_ce, capsys):
    args = ["search", str(small_index), "cache miss", "--reranker", str(tiny_ce), "--budget-ms", "none",
            "--cache", redis_server.url, "--json"]
    assert main(args) == 0 and main(args) == 0  # two runs: a restart keeps the scores
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["rerank"]["cache_hits"] == 0 and second["rerank"]["cache_hits"] == second["rerank"]["depth"]
    assert main(["search", str(small_index), "q", "--cache", "memcached://x"]) == 2
    assert "unknown cache" in capsys.readouterr().err
