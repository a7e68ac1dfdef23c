"""Pairs assembled from token ids equal the tokenizer's own, and a huge text is never tokenised whole."""

import time

import pytest
from transformers import AutoTokenizer

from cascade.documents import load_documents
from cascade.models.hub import resolve
from cascade.rerank import pairs as pairs_module
from cascade.rerank.pairs import PairTokens, cut, fit


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve("cascade-reranker"))


def test_fit_is_the_tokenizers_longest_first(tokenizer):
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    for max_length in (24, 25):
        for nq in range(1, 30, 2):
            for nd in range(1, 30, 3):
                q, d = " ".join(words[i % 8] for i in range(nq)), " ".join(words[(i + 3) % 8] for i in range(nd))
                n1, n2 = (len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (q, d))
                types = tokenizer(q, d, truncation="longest_first", max_length=max_length)["token_type_ids"]
                assert fit(n1, n2, max_length - 3) == (types.count(0) - 2, types.count(1) - 1), (n1, n2, max_length)


def test_assembled_pairs_equal_the_tokenizers_on_real_passages(tokenizer, scifact):
    docs = [d.text for d in load_documents(scifact)[:80]]
    long_query = docs[3] * 3  # longer than the budget: truncation on both sides
    pairs = [("does vitamin d lower blood pressure", d) for d in docs] + [(long_query, d) for d in docs[:20]]
    builder = PairTokens(tokenizer, 256)
    assert builder.exact
    built, truncated = builder.features(pairs)
    reference = tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation="longest_first", max_length=256)
    assert set(built) == set(reference) and all(built[k] == reference[k] for k in built)
    kept = [types.count(1) - 1 for types in reference["token_type_ids"]]
    whole = [len(tokenizer(d, add_special_tokens=False)["input_ids"]) for _, d in pairs]
    assert truncated == [k < n for k, n in zip(kept, whole)] and any(truncated) and not all(truncated)


def test_a_huge_query_is_cut_before_tokenising(tokenizer):
    builder = PairTokens(tokenizer, 128)
    start = time.perf_counter()
    built, truncated = builder.features([("tides " * 500_000, "The Moon raises tides.")])  # 3 MB
    assert time.perf_counter() - start < 1.0 and len(built["input_ids"][0]) == 128 and truncated == [False]
    assert cut("a b  c\nd", 2) == "a b" and cut("a b", 5) == "a b"


def test_passages_are_cached_and_the_cache_is_bounded(tokenizer, monkeypatch):
    monkeypatch.setattr(pairs_module, "CACHE_SIZE", 3)
    builder = PairTokens(tokenizer, 64)
    builder.features([("q", f"passage {k}") for k in range(5)])
    assert list(builder.cache) == ["passage 2", "passage 3", "passage 4"]  # queries are never kept
    builder.features([("q", "passage 2")])
    assert list(builder.cache)[-1] == "passage 2"


def test_a_layout_it_cannot_read_falls_back_to_the_tokenizer(tokenizer):
    class Unreadable(PairTokens):
        def special_tokens(self):
            return None

    assert not Unreadable(tokenizer, 64).exact
