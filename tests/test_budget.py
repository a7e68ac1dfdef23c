"""Latency budget logic: cost estimate, adaptive depth, early stop, degraded results.

Timing logic is tested on a fake clock that a fake scorer advances, so every assertion is exact and
no test depends on this machine's speed. The real model's budgeted latency is in
benchmarks/rerank_latency.py.
"""

import numpy as np
import pytest

from cascade import Cascade, CascadeError
from cascade.rerank import budget
from cascade.rerank.base import Encoded, Reranker
from cascade.rerank.budget import CostModel, plan_depth, prefix_batches, score_within


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class SlowScorer(Reranker):
    """Costs `ms_per_token` per padded token on the fake clock; scores a passage by its word count, so the
    reranked order is predictable. Records every batch it scored."""

    def __init__(self, clock: FakeClock, ms_per_token: float, believed_ms_per_token: float | None = None):
        self.model_id = "slow-scorer"
        self.clock, self.ms_per_token = clock, ms_per_token
        self.cost = CostModel(ms_per_token=believed_ms_per_token)
        self.batches: list[list[int]] = []

    def encode(self, pairs):
        words = [len(d.split()) for _, d in pairs]
        return Encoded(lengths=np.array(words), features=words)

    def score(self, encoded, batch):
        self.clock.t += self.ms_per_token * len(batch) * encoded.lengths[batch].max() / 1000
        self.batches.append(batch.tolist())
        return np.array([float(encoded.features[i]) for i in batch], dtype=np.float32)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(budget, "now", fake)
    return fake


def test_cost_model_smooths_and_knows_nothing_at_first():
    cost = CostModel()
    assert cost.predict(1000) == 0.0  # no estimate yet: plan everything, measure the first batch
    cost.observe(100, 50.0)
    assert cost.ms_per_token == 0.5
    cost.observe(100, 150.0)
    assert cost.ms_per_token == pytest.approx(0.7 * 0.5 + 0.3 * 1.5)
    assert cost.predict(10) == pytest.approx(10 * cost.ms_per_token)


def test_plan_depth_takes_the_largest_prefix_that_fits():
    cost = CostModel(ms_per_token=1.0)
    lengths = np.full(30, 10)
    assert plan_depth(lengths, 4, cost, 100) == 10  # two batches of 4 (80 ms) + 2 of the third (20 ms)
    assert plan_depth(lengths, 4, cost, 1000) == 30
    assert plan_depth(lengths, 4, cost, 5) == 0
    # padding counts: one long passage makes its whole batch expensive
    lengths[1] = 100
    assert plan_depth(lengths, 4, cost, 100) == 1
    assert [b.tolist() for b in prefix_batches(5, 2)] == [[0, 1], [2, 3], [4]]


def test_scoring_stops_before_a_batch_that_would_overrun(clock):
    scorer = SlowScorer(clock, ms_per_token=1.0, believed_ms_per_token=1.0)
    encoded = scorer.encode([("q", "w " * 10)] * 30)
    start = clock.t
    scores, planned = score_within(scorer, encoded, 4, deadline=start + 0.1)
    assert planned == 10 and len(scores) == 10
    assert scorer.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # first-stage order
    assert clock.t - start == pytest.approx(0.1)


def test_overrun_is_bounded_by_one_batch_when_the_estimate_is_wrong(clock):
    """The model believes batches cost half what they do: it learns from each measured batch and never
    overruns the budget by more than one batch's measured time."""
    scorer = SlowScorer(clock, ms_per_token=1.0, believed_ms_per_token=0.5)
    encoded = scorer.encode([("q", "w " * 10)] * 30)
    start = clock.t
    scores, planned = score_within(scorer, encoded, 4, deadline=start + 0.1)
    assert planned == 20  # planned with the optimistic estimate
    assert len(scores) == 8  # stopped once the estimate had caught up
    assert scorer.cost.ms_per_token > 0.7
    assert (clock.t - start) * 1000 <= 100 + 40


def test_no_deadline_scores_everything_in_length_sorted_batches(clock):
    scorer = SlowScorer(clock, ms_per_token=1.0)
    encoded = scorer.encode([("q", "w " * n) for n in (3, 9, 1, 7, 5)])
    scores, planned = score_within(scorer, encoded, 2, deadline=None)
    assert planned == 5
    np.testing.assert_array_equal(scores, [3, 9, 1, 7, 5])
    assert scorer.batches == [[1, 3], [4, 0], [2]]


DOCS = [{"id": f"d{n}", "text": "tides " + "word " * n} for n in range(1, 13)]


def test_search_degrades_to_scored_head_then_first_stage_order(clock):
    scorer = SlowScorer(clock, ms_per_token=1.0, believed_ms_per_token=1.0)
    cascade = Cascade.build(DOCS, reranker=scorer, cache=None)
    full = cascade.search("tides", retrieve=12, rerank_depth=12, top=12, budget_ms=None, batch_size=4)
    assert not full.degraded and full.rerank["scored"] == 12
    fused = [h.id for h in cascade.search("tides", retrieve=12, rerank_depth=0, top=12).hits]

    # passages are 2-13 words: batches of 4 in first-stage order; give it room for about two batches
    words = {p.id: len(p.content.split()) for p in cascade.index.passages}
    lengths = np.array([words[i] for i in fused])
    two_batches = sum(4 * lengths[b].max() for b in prefix_batches(8, 4))
    result = cascade.search("tides", retrieve=12, rerank_depth=12, top=12, budget_ms=two_batches + 0.5, batch_size=4,
                            blend=0)
    assert result.degraded and result.rerank["status"] == "degraded"
    assert result.rerank["scored"] == result.rerank["planned_depth"] == 8
    ids = [h.id for h in result.hits]
    head = sorted(fused[:8], key=lambda i: -lengths[fused.index(i)])
    assert ids[:8] == head  # scored: reranked order (the fake scores by length)
    assert ids[8:] == fused[8:]  # unscored: first-stage order
    assert all(h.stage_ranks["rerank"] is None for h in result.hits[8:])


def test_budget_too_small_for_any_batch_returns_first_stage_order(clock):
    scorer = SlowScorer(clock, ms_per_token=1.0, believed_ms_per_token=1.0)
    cascade = Cascade.build(DOCS, reranker=scorer, cache=None)
    fused = [h.id for h in cascade.search("tides", retrieve=12, rerank_depth=0, top=12).hits]
    result = cascade.search("tides", retrieve=12, rerank_depth=12, top=12, budget_ms=0)
    assert result.degraded and result.rerank["scored"] == 0 and scorer.batches == []
    assert [h.id for h in result.hits] == fused
    assert "scored 0 of 12" in result.rerank["reason"]


def test_a_first_stage_that_used_the_budget_up_is_named_as_the_cause(clock, monkeypatch):
    scorer = SlowScorer(clock, ms_per_token=1.0, believed_ms_per_token=1.0)
    cascade = Cascade.build(DOCS, reranker=scorer, cache=None)
    encode = cascade.encoder.encode_query

    def slow_encode(query):  # a loaded machine: encoding the query alone takes 500 ms
        clock.t += 0.5
        return encode(query)

    monkeypatch.setattr(cascade.encoder, "encode_query", slow_encode)
    result = cascade.search("tides", retrieve=12, rerank_depth=12, top=12, budget_ms=100)
    assert result.degraded and result.rerank["scored"] == 0
    assert result.rerank["reason"] == ("latency budget: scored 0 of 12 (what ran before reranking took 500 ms of the "
                                       "100 ms budget)")
    assert result.degraded_reason == f"rerank: {result.rerank['reason']}"

def test_bad_budgets_are_refused():
    cascade = Cascade.build(DOCS, reranker=None, cache=None)
    for bad in (-1, float("nan"), "fast"):
        with pytest.raises(CascadeError, match="budget_ms"):
            cascade.search("tides", budget_ms=bad)


def test_cli_budget_flag_marks_degraded_json(small_index, tiny_ce, capsys):
    import json

    from cascade.cli import main

    assert main(["search", str(small_index), "cache miss", "--reranker", str(tiny_ce), "--budget-ms", "0",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["degraded"] is True and out["rerank"]["scored"] == 0
    with pytest.raises(SystemExit):
        main(["search", str(small_index), "cache miss", "--budget-ms", "soon"])
    assert "--budget-ms" in capsys.readouterr().err
