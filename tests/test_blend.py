"""Blending the reranker's ranking with the first stage's (cascade/rerank/blend.py)."""

import numpy as np
import pytest

from cascade import Cascade, CascadeError, CrossEncoder
from cascade.rerank.blend import blended_scores
from cascade.settings import SearchSettings
from tests.conftest import DOCS


def test_blended_scores_by_hand():
    scores = np.array([0.1, 0.9, 0.5])  # reranker ranks 3, 1, 2; first-stage ranks 1, 2, 3
    got = blended_scores(scores, np.array([1, 2, 3]), 1.0)
    np.testing.assert_allclose(got, [1 / 63 + 1 / 61, 1 / 61 + 1 / 62, 1 / 62 + 1 / 63], rtol=1e-6)
    np.testing.assert_allclose(blended_scores(scores, np.array([1, 2, 3]), 0.0), scores)
    # a heavy first-stage weight keeps first-stage order; none keeps the reranker's
    assert np.argsort(-blended_scores(scores, np.array([1, 2, 3]), 50.0)).tolist() == [0, 1, 2]
    assert np.argsort(-blended_scores(scores, np.array([1, 2, 3]), 0.0)).tolist() == [1, 2, 0]


def test_symmetric_ties_go_where_asked_and_nothing_else_moves():
    swapped = np.array([0.2, 0.9])  # first-stage ranks 1, 2; the reranker prefers the second: an exact tie at beta 1
    order = {ties: np.argsort(-blended_scores(swapped, np.array([1, 2]), 1.0, ties=ties), kind="stable").tolist()
             for ties in ("first", "reranker")}
    assert order == {"first": [0, 1], "reranker": [1, 0]}
    rng = np.random.default_rng(0)
    for _ in range(200):  # apart from exact ties the two orders agree
        scores, ranks = rng.normal(size=30), np.arange(1, 31)
        plain = blended_scores(scores, ranks, 1.0, ties="first").astype(np.float64)
        tied = blended_scores(scores, ranks, 1.0)
        np.testing.assert_allclose(tied, plain, atol=1e-9)
        a, b = np.argsort(-plain, kind="stable"), np.argsort(-tied, kind="stable")
        assert all(plain[i] == plain[j] for i, j in zip(a, b))  # where they differ, the scores were equal


@pytest.mark.parametrize("bad", [-0.5, float("inf"), float("nan"), "1", True])
def test_bad_blend_weights_are_refused(bad):
    with pytest.raises(CascadeError, match="blend must be"):
        SearchSettings(blend=bad)


def test_search_orders_the_head_by_the_blend(tiny_ce):
    ce = CrossEncoder(str(tiny_ce), precision="fp32")
    cascade = Cascade.build(DOCS, reranker=ce, cache=None)
    query = "does rate limiting increase latency"
    fused = cascade.search(query, rerank_depth=0, top=6).hits
    contents = {p.id: p.content for p in cascade.index.passages}
    raw = ce.predict([(query, contents[h.id]) for h in fused], raw_scores=True)
    alone = cascade.search(query, rerank_depth=6, top=6, blend=0, budget_ms=None)
    assert [h.id for h in alone.hits] == [fused[i].id for i in np.argsort(-raw, kind="stable")]
    np.testing.assert_allclose([h.score for h in alone.hits], np.sort(raw)[::-1], rtol=1e-5)
    blended = cascade.search(query, rerank_depth=6, top=6, blend=1.0, budget_ms=None)
    want = blended_scores(raw, np.arange(1, 7), 1.0)
    assert [h.id for h in blended.hits] == [fused[i].id for i in np.argsort(-want, kind="stable")]
    np.testing.assert_allclose([h.score for h in blended.hits], np.sort(want)[::-1], rtol=1e-5)
    assert blended.rerank["blend"] == 1.0
