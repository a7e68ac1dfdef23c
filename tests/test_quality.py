"""Real weights on real data: SciFact test first-stage numbers must land near the published ones."""

import pytest

from cascade.evaluate.beir import load_split
from cascade.evaluate.runner import evaluate, open_cascade


@pytest.fixture(scope="module")
def scifact_eval(scifact, tmp_path_factory):
    cascade = open_cascade(scifact, tmp_path_factory.mktemp("scifact-index"), reranker=None, progress=False)
    return evaluate(cascade, load_split(scifact, "test"), ["bm25", "dense", "hybrid"], progress=False)


def test_first_stage_matches_published_scifact_numbers(scifact_eval):
    ndcg = {stage: r.metrics["ndcg@10"] for stage, r in scifact_eval.stages.items()}
    assert 0.660 <= ndcg["bm25"] <= 0.690, ndcg  # published 0.665 (Elasticsearch) / 0.672 (Pyserini)
    assert 0.635 <= ndcg["dense"] <= 0.655, ndcg  # published 0.645 (all-MiniLM-L6-v2)
    assert ndcg["hybrid"] > max(ndcg["bm25"], ndcg["dense"]), ndcg  # fusion must beat both inputs
    assert scifact_eval.stages["hybrid"].metrics["recall@150"] > 0.9
