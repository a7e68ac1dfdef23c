"""Context assembly: deduplication, merging adjacent windows, citations, and a hard token budget."""

from __future__ import annotations

import json

import pytest

from cascade.cli import main
from cascade.context import Span, Tokenizer, assemble, merge_overlap, window_position
from cascade.errors import CascadeError
from cascade.models.hub import DEFAULT_ENCODER
from tests.conftest import write_jsonl


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(DEFAULT_ENCODER)


def test_window_position_and_overlap_merge():
    assert window_position("doc-1#3", "doc-1") == 3 and window_position("doc-1", "doc-1") == 0
    assert window_position("doc-1#x", "doc-1") == 0
    assert merge_overlap("a b c d e", "d e f g") == "a b c d e f g"
    assert merge_overlap("a b c", "x y") == "a b c x y"


def test_dedupe_merge_and_citations(tokenizer):
    words = [f"w{i}" for i in range(60)]
    spans = [
        Span("d1#1", "d1", "Doc one", " ".join(words[20:50]), 1),
        Span("d2", "d2", "Doc two", "tides rise because the moon pulls the oceans toward it twice a day", 0),
        Span("d1#0", "d1", "Doc one", " ".join(words[0:30]), 0),  # overlaps d1#1 by 10 words
        Span("m2", "m2", "Mirror", "tides rise because the moon pulls the oceans toward it twice a day!", 0),
        Span("d1#3", "d1", "Doc one", "a far later part of doc one", 3),
    ]
    ctx = assemble("q", spans, 1000, tokenizer)
    assert [s.doc_id for s in ctx.sources] == ["d1", "d2"] and [s.number for s in ctx.sources] == [1, 2]
    assert ctx.sources[0].passage_ids == ["d1#0", "d1#1", "d1#3"]
    assert ctx.sources[0].text == " ".join(words[0:50]) + " [...] a far later part of doc one"
    assert ctx.dropped == [{"id": "m2", "reason": "near-duplicate of d2"}]
    assert ctx.text.startswith("[1] Doc one\nw0 w1") and "\n\n[2] Doc two\ntides" in ctx.text
    assert ctx.tokens == tokenizer.count(ctx.text)


@pytest.mark.parametrize("budget", [30, 57, 80, 200])
def test_budget_is_never_exceeded_and_the_cut_is_marked(tokenizer, budget):
    spans = [Span(f"d{i}", f"d{i}", f"Title {i}", " ".join(f"token{i}x{j}" for j in range(40)), 0) for i in range(5)]
    ctx = assemble("q", spans, budget, tokenizer)
    assert ctx.tokens <= budget and tokenizer.count(ctx.text) == ctx.tokens
    kept = {s.doc_id for s in ctx.sources}
    assert {d["id"] for d in ctx.dropped} == {s.id for s in spans} - kept  # everything is accounted for
    assert all(d["reason"] == "over the token budget" for d in ctx.dropped)
    assert [s.doc_id for s in ctx.sources] == [f"d{i}" for i in range(len(ctx.sources))]  # best first
    assert all(not s.truncated for s in ctx.sources[:-1])
    if ctx.sources and ctx.sources[-1].truncated:
        assert ctx.sources[-1].text.endswith(" ...")


@pytest.mark.parametrize("budget", [500, 5000, 1_000_000])
def test_summed_counts_pack_exactly_what_recounting_the_whole_text_packs(tokenizer, scifact, budget):
    """Counting each source once (linear) must give what counting the growing context each time gave."""
    from cascade.context import _pack, group
    from cascade.documents import load_documents

    docs = [d for d, _ in zip(load_documents(scifact), range(60))]
    documents, _ = group([Span(d.id, d.id, d.title, d.text, 0) for d in docs])
    summed, exact = (_pack("q", documents, budget, tokenizer, way) for way in (False, True))
    assert summed == exact and summed.tokens <= budget


def test_bad_budget_and_tokenizer_are_clear_errors(tokenizer, tmp_path):
    with pytest.raises(CascadeError, match="max_tokens"):
        assemble("q", [], 0, tokenizer)
    with pytest.raises(CascadeError, match="not found: /nonexistent/tokenizer-dir/"):
        Tokenizer("/nonexistent/tokenizer-dir/")
    with pytest.raises(CascadeError, match="could not load tokenizer"):
        Tokenizer(str(tmp_path))


def test_cli_context_merges_windows_of_a_long_document(tmp_path, capsys):
    long_text = " ".join(f"tide{i}" if i % 7 else "moon tides ocean" for i in range(300))
    docs = [{"id": "long", "title": "Tides", "text": long_text},
            {"id": "other", "title": "Cats", "text": "Cats sleep a lot during the day."}]
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    idx = tmp_path / "idx"
    assert main(["index", str(src), "--out", str(idx), "--quiet", "--passage-words", "100", "--overlap", "20"]) == 0
    capsys.readouterr()
    assert main(["context", str(idx), "moon tides ocean", "--no-rerank", "--max-tokens", "5000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    first = out["sources"][0]
    assert first["doc_id"] == "long" and len(first["passage_ids"]) >= 3
    assert first["text"].split() == long_text.split()  # windows stitched back without repeating the overlap
    assert out["tokens"] <= 5000 and out["tokenizer"] == DEFAULT_ENCODER

    assert main(["context", str(idx), "moon tides ocean", "--no-rerank", "--max-tokens", "60"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("[1] Tides\n") and "/60 tokens" in printed and "cut to fit" in printed
