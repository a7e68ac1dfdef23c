"""The listwise LLM reranker against a real local OpenAI-compatible server with scripted answers."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from cascade.errors import CascadeError
from cascade.rerank.llm import LLMReranker, parse_ranking, retry_wait, windows
from tests.llm_server import ScriptedLLM


@pytest.fixture
def llm_server():
    server = ScriptedLLM()
    yield server
    server.stop()


@pytest.mark.parametrize("text, n, expected", [
    ("[2] > [3] > [1]", 3, [1, 2, 0]),
    ("[2] > [3] > [2] > [9]", 3, [1, 2, 0]),  # repeat and unknown id ignored, [1] missing -> after the placed
    ("[4] > [1]", 5, [3, 0, 1, 2, 4]),  # the unmentioned keep their previous relative order
    ("I cannot rank these passages.", 3, [0, 1, 2]),
    ("", 2, [0, 1]),
    ("[0] > [-1] > [3]", 3, [2, 0, 1]),  # ids are 1-based
    ("<think>maybe [1] > [2]? no.</think>\n[3] > [2]", 3, [2, 1, 0]),  # thinking is not the answer
    ("<think>[2] > [1] and then I ran out of tok", 3, [0, 1, 2]),
])
def test_parse_ranking(text, n, expected):
    assert parse_ranking(text, n) == expected


def test_windows_slide_from_the_bottom_to_the_top():
    assert windows(10, 4, 2) == [(6, 10), (4, 8), (2, 6), (0, 4)]
    assert windows(3, 20, 10) == [(0, 3)]
    assert windows(20, 20, 10) == [(0, 20)]


def test_sliding_window_lifts_the_best_passage_from_the_bottom(llm_server, monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sekret")
    passages = [f"filler passage number {k}" for k in range(9)] + ["why the moon raises ocean tides"]
    llm = LLMReranker(llm_server.url, "scripted", window=4, step=2, api_key_env="TEST_LLM_KEY")
    result = llm.rerank("moon tides", passages)
    assert result.order[0] == 9 and sorted(result.order.tolist()) == list(range(10))
    assert result.calls == 4 and not result.degraded
    assert result.tokens["prompt"] > 0 and result.tokens["completion"] > 0
    request = llm_server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["authorization"] == "Bearer sekret"
    assert request["body"]["model"] == "scripted" and request["body"]["temperature"] == 0


def test_the_llm_speaks_the_sentence_transformers_verbs(llm_server):
    """predict/rank like every reranker: each query's documents ranked together, scored by position."""
    llm = LLMReranker(llm_server.url, "keywords", window=4, step=2)
    docs = ["cats sleep", "the moon raises tides", "tides follow the moon twice daily at the moon", "moon dust"]
    ranked = llm.rank("moon tides", docs, top_k=3, return_documents=True)
    assert [r["corpus_id"] for r in ranked] == [1, 2, 3] and [r["score"] for r in ranked] == [4.0, 3.0, 2.0]
    assert ranked[0]["text"] == docs[1]
    scores = llm.predict([("moon tides", docs[0]), ("cats", docs[0]), ("moon tides", docs[1]), ("cats", "dogs")])
    assert scores.tolist() == [1.0, 2.0, 2.0, 1.0]


def test_malformed_answers_keep_previous_relative_order(llm_server):
    llm_server.script = [{"content": "[3] > [3] > [42] > banana"}]
    result = LLMReranker(llm_server.url, "m", window=5, step=5).rerank("q", ["a", "b", "c", "d", "e"])
    assert result.order.tolist() == [2, 0, 1, 3, 4] and not result.degraded


@pytest.mark.parametrize("step, reason", [
    ({"status": 500}, "HTTP 500"),
    ({"status": 429}, "HTTP 429"),
    ({"body": b"<html>oops</html>"}, "not JSON"),
    ({"body": json.dumps({"choices": []}).encode()}, "without choices"),
])
def test_endpoint_failures_fall_back_to_previous_order(llm_server, step, reason):
    llm_server.script = [{}, step, step, step]  # the first window succeeds, the second fails (retries included)
    passages = [f"p{k}" for k in range(6)]
    result = LLMReranker(llm_server.url, "m", window=4, step=2).rerank("p5", passages)
    assert result.degraded and reason in result.reason
    assert result.order.tolist() == list(range(6))


def test_rate_limits_and_server_errors_are_retried_then_succeed(llm_server):
    llm_server.script = [{"status": 429}, {"status": 503}]
    passages = ["filler", "why the moon raises tides"]
    result = LLMReranker(llm_server.url, "m").rerank("moon tides", passages)
    assert not result.degraded and result.order.tolist() == [1, 0] and result.calls == 3
    assert llm_server.requests[-1]["body"]["max_tokens"] == 512
    llm_server.script = [{"status": 429}]
    once = LLMReranker(llm_server.url, "m", retries=0, max_tokens=None).rerank("moon tides", passages)
    assert once.degraded and "HTTP 429" in once.reason and "max_tokens" not in llm_server.requests[-1]["body"]
    assert retry_wait("2", 0) == 2.0 and retry_wait("3600", 0) == 5.0 and retry_wait(None, 2) == 1.0
    assert retry_wait("Wed, 21 Oct 2015 07:28:00 GMT", 0) == 0.25


def test_slow_answer_times_out_and_falls_back(llm_server):
    llm_server.script = [{"delay": 2.0}]
    start = time.perf_counter()
    result = LLMReranker(llm_server.url, "m", timeout_s=0.3).rerank("q", ["a", "b", "c"])
    assert time.perf_counter() - start < 1.5
    assert result.degraded and "too slow" in result.reason and result.order.tolist() == [0, 1, 2]


def test_unreachable_endpoint_is_degraded_not_an_exception():
    from tests.conftest import free_port

    result = LLMReranker(f"http://127.0.0.1:{free_port()}/v1", "m", timeout_s=2).rerank("q", ["a", "b"])
    assert result.degraded and "unreachable" in result.reason


@pytest.mark.parametrize("kwargs, message", [
    ({"url": "localhost:8000"}, "must be an http"),
    ({"model": ""}, "--llm-model"),
    ({"window": 1}, "window >= 2"),
    ({"step": 0}, "step"),
    ({"timeout_s": 0}, "timeout"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    args = {"url": "http://x/v1", "model": "m", **kwargs}
    with pytest.raises(CascadeError, match=message):
        LLMReranker(args.pop("url"), args.pop("model"), **args)


def test_cascade_llm_stage_reorders_the_head_and_reports_tokens(small_index, llm_server):
    from cascade import Cascade

    engine = Cascade.load(small_index, reranker=None, cache=None,
                          llm=LLMReranker(llm_server.url, "scripted", window=3, step=1))
    plain = engine.search("vitamin D sunlight bones", rerank_depth=0, top=6)
    result = engine.search("vitamin D sunlight bones", rerank_depth=0, llm_depth=4, top=6)
    assert result.llm["calls"] == 2 and result.llm["tokens"]["prompt"] > 0 and not result.degraded
    assert result.hits[0].doc_id == "n-1" and result.hits[0].stage_ranks["llm"] == 1
    assert {h.id for h in result.hits[:4]} == {h.id for h in plain.hits[:4]}  # only the head was reordered
    assert [h.id for h in result.hits[4:]] == [h.id for h in plain.hits[4:]]
    assert "llm" in result.timings_ms

    llm_server.script = [{"status": 503}] * 3  # it persists through the retries
    failed = engine.search("vitamin D sunlight bones", rerank_depth=0, llm_depth=4, top=6)
    assert failed.degraded and "HTTP 503" in failed.llm["reason"]
    assert [h.id for h in failed.hits] == [h.id for h in plain.hits]


def test_llm_depth_without_llm_is_a_clear_error(small_index):
    from cascade import Cascade

    engine = Cascade.load(small_index, reranker=None, cache=None)
    with pytest.raises(CascadeError, match="--llm-url"):
        engine.search("tides", llm_depth=3)


def test_cli_llm_stage(small_index, llm_server, capsys):
    from cascade.cli import main

    code = main(["search", str(small_index), "vitamin D sunlight bones", "--no-rerank", "--llm-url", llm_server.url,
                 "--llm-model", "scripted", "--stages", "hybrid:6,llm:4", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["llm"]["model"] == "scripted" and out["hits"][0]["doc_id"] == "n-1"
    assert np.isfinite(out["timings_ms"]["llm"])


def test_ranking_for_a_client_that_left_stops_between_calls(llm_server):
    """A server sets budget.GONE; once it says the client has gone, no further window is sent to the LLM."""
    from cascade.rerank import budget

    llm = LLMReranker(llm_server.url, "keywords", window=4, step=2)
    token = budget.GONE.set(lambda: len(llm_server.requests) >= 1)  # the client leaves during the first call
    try:
        with pytest.raises(budget.Abandoned):
            llm.rerank("moon tides", [f"passage {k}" for k in range(10)])  # 4 windows
    finally:
        budget.GONE.reset(token)
    assert len(llm_server.requests) == 1
