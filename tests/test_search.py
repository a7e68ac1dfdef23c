import json

import numpy as np
import pytest

from cascade import Cascade, CascadeError, CrossEncoder, Hit
from cascade.cli import main
from cascade.models.hub import DEFAULT_ENCODER, bundled_path


def run_json(capsys, *args):
    assert main(["search", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_contract_with_reranker(small_index, tiny_ce, capsys):
    out = run_json(capsys, small_index, "does rate limiting increase latency", "--reranker", tiny_ce,
                   "--retrieve", 6, "--rerank-depth", 4, "--top", 5, "--blend", 0, "--budget-ms", "none")
    assert set(out) >= {"query", "hits", "timings_ms"}
    assert out["query"] == "does rate limiting increase latency"
    assert set(out["timings_ms"]) == {"bm25", "dense", "fusion", "rerank", "total"}
    assert all(v >= 0 for v in out["timings_ms"].values())
    assert out["timings_ms"]["total"] >= out["timings_ms"]["rerank"]
    assert out["rerank"] == {"status": "ok", "reason": "", "model": str(tiny_ce), "depth": 4, "planned_depth": 4,
                             "scored": 4, "cache_hits": 0, "degraded": False, "blend": 0.0}
    assert out["degraded"] is False
    hits = out["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    for h in hits:
        assert {"id", "score", "rank", "stage_scores"} <= set(h)
        assert set(h["stage_scores"]) == {"bm25", "dense", "fusion", "late", "rerank", "llm"}  # None: did not run
    reranked = [h for h in hits if h["stage_scores"]["rerank"] is not None]
    assert len(reranked) == 4 and hits[:4] == reranked
    assert [h["score"] for h in reranked] == sorted((h["score"] for h in reranked), reverse=True)
    assert hits[4]["stage_scores"]["rerank"] is None and hits[4]["score"] == hits[4]["stage_scores"]["fusion"]
    # the scores are the model's own scores for these pairs
    cascade = Cascade.load(small_index, reranker=None)
    texts = {p.id: p.content for p in cascade.index.passages}
    ce = CrossEncoder(str(tiny_ce))
    direct = ce.predict([(out["query"], texts[h["id"]]) for h in reranked], raw_scores=True)
    np.testing.assert_allclose(direct, [h["score"] for h in reranked], atol=1e-4)
    np.testing.assert_allclose(direct, [h["model_scores"]["rerank"] for h in reranked], atol=1e-4)
    assert hits[4]["model_scores"] == {}


def test_without_reranker_reports_unavailable_and_keeps_first_stage_order(small_index, capsys, monkeypatch,
                                                                           tmp_path):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("cascade.models.hub.WEIGHTS_DIR", tmp_path / "no-bundle")
    out = run_json(capsys, small_index, "cache miss database round trip")
    assert out["rerank"]["status"] == "unavailable" and "not in the local Hugging Face cache" in out["rerank"]["reason"]
    assert [h["stage_ranks"]["fusion"] for h in out["hits"]] == list(range(1, len(out["hits"]) + 1))
    assert out["hits"][0]["id"] == "c-2"
    assert main(["search", str(small_index), "cache miss database round trip"]) == 0
    assert "rerank: unavailable (" in capsys.readouterr().out


def test_text_output_shows_stage_scores_snippets_and_timings(small_index, tiny_ce, capsys):
    assert main(["search", str(small_index), "vitamin D bones", "--reranker", str(tiny_ce), "--top", "6",
                 "--budget-ms", "none"]) == 0  # a slow first query must not starve the reranker
    out = capsys.readouterr().out
    assert "[n-1]  Vitamin D" in out and "bm25 #1" in out and "rerank #" in out and "; model " in out
    assert "Sunlight lets the skin make vitamin D" in out
    assert "timings (ms): bm25" in out and "total" in out


def test_document_metadata_is_indexed_and_returned_with_each_hit(tmp_path, capsys):
    from tests.conftest import write_jsonl

    src = write_jsonl(tmp_path / "docs.jsonl", [
        {"_id": "a", "title": "Tides", "text": "The Moon raises tides twice a day. " * 80,
         "metadata": {"url": "https://example.org/tides"}, "year": 2021},
        {"_id": "b", "text": "Rate limiting caps requests per client."}])
    assert main(["index", str(src), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    capsys.readouterr()
    hits = run_json(capsys, tmp_path / "idx", "moon tides", "--rerank-depth", "0", "--top", "20")["hits"]
    assert len({h["id"] for h in hits if h["doc_id"] == "a"}) > 1  # every window carries its document's metadata
    assert all(h["metadata"] == {"url": "https://example.org/tides", "year": 2021} for h in hits if h["doc_id"] == "a")
    assert next(h for h in hits if h["doc_id"] == "b")["metadata"] == {}
    engine = Cascade.build([{"id": "x", "text": "moon tides", "lang": "en"}], reranker=None)
    assert engine.search("tides", rerank_depth=0).hits[0].metadata == {"lang": "en"}


def test_stage_ranks_are_consistent_with_each_stage(small_index):
    cascade = Cascade.load(small_index, reranker=None)
    result = cascade.search("rate limiting latency", retrieve=6, rerank_depth=0, top=6)
    bm25_ids, _ = cascade.index.bm25.search("rate limiting latency", 6)
    for h in result.hits:
        assert isinstance(h, Hit)
        if h.stage_ranks["bm25"] is not None:
            assert cascade.index.passages[bm25_ids[h.stage_ranks["bm25"] - 1]].id == h.id
    assert result.rerank["status"] == "unavailable" and result.rerank["reason"] == "disabled"


def test_weighted_fusion_and_alpha(small_index):
    cascade = Cascade.load(small_index, reranker=None)
    lexical = cascade.search("tides Moon gravity", fusion="weighted", alpha=0.0, rerank_depth=0)
    assert lexical.hits[0].id == "s-1"
    assert all(h.stage_scores["bm25"] is not None for h in lexical.hits if h.score > 0)


@pytest.mark.parametrize("args, message", [
    (["   "], "query is empty"),
    (["tides " * 4000], "query is 24000 characters long; at most 20000"),
    (["q", "--retrieve", "10", "--rerank-depth", "20"], "--retrieve (10) must be >= --rerank-depth (20)"),
    (["q", "--reranker", "./no/such/model"], "model directory not found"),
    (["q", "--reranker", "BI_ENCODER"], "not a cross-encoder"),
    (["q", "--no-rerank", "--reranker", "x/y"], "contradict"),
])
def test_cli_errors_are_one_line(small_index, capsys, args, message):
    args = [str(bundled_path(DEFAULT_ENCODER)) if a == "BI_ENCODER" else a for a in args]
    assert main(["search", str(small_index), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("cascade: error:")


def test_non_utf8_query_is_refused(small_index):
    with pytest.raises(CascadeError, match="not valid UTF-8"):
        Cascade.load(small_index, reranker=None).search("caf\udce9")


def test_api_build_in_memory_and_validation(tiny_ce):
    cascade = Cascade.build(["the moon raises tides", "caches avoid round trips"], reranker=str(tiny_ce))
    result = cascade.search("moon tides", retrieve=2, rerank_depth=2, top=1, budget_ms=None)  # no timing in tests
    assert len(result.hits) == 1 and result.rerank["status"] == "ok"
    with pytest.raises(CascadeError, match="rerank_depth must be an integer between 0 and 1000"):
        cascade.search("x", rerank_depth=-1)
    with pytest.raises(CascadeError, match="must be >= rerank_depth"):
        cascade.search("x", retrieve=1, rerank_depth=2)
    with pytest.raises(CascadeError, match="no documents"):
        Cascade.build([])
    with pytest.raises(CascadeError, match="duplicate document id"):
        Cascade.build([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])


def test_a_reranker_loaded_for_an_index_reads_as_far_as_its_passages_need(tmp_path, tiny_ce):
    """80-word passages need 128-token pairs: a reranker loaded by name for such an index stops there (2.5x less
    work than its own 256 on dev, same quality); whole documents, or a Reranker given as an object, keep theirs."""
    own = CrossEncoder(str(tiny_ce), warm_up=False).max_length
    assert own > 128
    docs = ["the moon raises tides", "caches avoid round trips"]
    windows = {words: Cascade.build(docs, tmp_path / str(words), reranker=str(tiny_ce),
                                    passage_words=words).reranker.max_length for words in (80, 120, 0)}
    assert windows == {80: 128, 120: min(own, 192), 0: own}
    given = CrossEncoder(str(tiny_ce), warm_up=False)
    assert Cascade.load(tmp_path / "80", reranker=given).reranker.max_length == own
    assert Cascade.load(tmp_path / "80", reranker=str(tiny_ce)).reranker.max_length == 128


def test_demo_runs_end_to_end(tiny_ce, capsys):
    assert main(["demo", "--reranker", str(tiny_ce)]) == 0
    out = capsys.readouterr().out
    assert "Indexed" in out and out.count("Q: ") == 5 and "Answer ranked first:" in out
    assert f"rerank: {tiny_ce} (top 20)" in out
