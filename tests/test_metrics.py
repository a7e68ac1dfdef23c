"""Metrics against hand arithmetic and against pytrec_eval (trec_eval itself) on real BM25 runs.

pytrec_eval is a test-only reference: `pip install pytrec-eval-terrier`.
"""

import csv
import gzip
import json
from math import log2
from pathlib import Path

import bm25s
import numpy as np
import pytest
import Stemmer

from cascade import CascadeError
from cascade.evaluate.metrics import METRICS, mean, metric_fn, mrr_at, ndcg_at, per_query, precision_at, ranked, recall_at

BEIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beir"
DEPTH = 100

# our name -> (trec_eval measure, depth the run is cut to first); MRR@k is recip_rank over the top k only.
TREC = {"ndcg@5": ("ndcg_cut_5", None), "ndcg@10": ("ndcg_cut_10", None), "ndcg@100": ("ndcg_cut_100", None),
        "mrr@10": ("recip_rank", 10), "recall@10": ("recall_10", None), "recall@100": ("recall_100", None),
        "p@5": ("P_5", None), "p@10": ("P_10", None)}


@pytest.fixture(scope="module")
def trec():
    return pytest.importorskip("pytrec_eval", reason="reference implementation: pip install pytrec-eval-terrier")


def trec_eval(trec, run, qrels) -> dict[str, dict[str, float]]:
    """pytrec_eval's value of every TREC metric, keyed like `per_query`: name -> {qid: value}."""
    out = {}
    for name, (measure, cut) in TREC.items():
        cut_run = {q: {d: docs[d] for d in ranked(docs)[:cut]} for q, docs in run.items()} if cut else run
        scores = trec.RelevanceEvaluator(qrels, {measure}).evaluate(cut_run)
        out[name] = {q: v[measure] for q, v in scores.items()}
    return out


def assert_matches_trec(trec, run, qrels) -> dict[str, dict[str, float]]:
    """Every metric agrees with trec_eval on every query trec_eval scores; returns pytrec_eval's values."""
    ref = trec_eval(trec, run, qrels)
    ours = per_query(run, qrels, list(TREC))
    for name, values in ref.items():
        assert values, name
        for qid, expected in values.items():
            assert ours[name][qid] == pytest.approx(expected, abs=1e-6), (name, qid)
    return ref


# --- hand-computed values ---------------------------------------------------------------------------------

RANKING = ["d1", "d2", "d3", "d4", "d5"]
RELS = {"d1": 0, "d2": 2, "d4": 1, "d9": 3}  # d9 is relevant but never retrieved; d3, d5 are unjudged


def test_ndcg_by_hand():
    # top 3 gains 0, 2, 0 -> DCG = 2/log2(3); ideal = judged relevances 3, 2, 1 -> 3/log2(2) + 2/log2(3) + 1/log2(4)
    assert ndcg_at(RANKING, RELS, 3) == pytest.approx(2 / log2(3) / (3 + 2 / log2(3) + 1 / 2))
    # top 5 gains 0, 2, 0, 1, 0 -> DCG = 2/log2(3) + 1/log2(5); same ideal (only three relevant docs exist)
    assert ndcg_at(RANKING, RELS, 5) == pytest.approx((2 / log2(3) + 1 / log2(5)) / (3 + 2 / log2(3) + 1 / 2))
    # ideal cut at k=1: 3/log2(2) = 3
    assert ndcg_at(RANKING, RELS, 1) == 0.0
    assert ndcg_at(["d9"], RELS, 1) == 1.0


def test_mrr_by_hand():
    # first relevant doc is d2 at rank 2 -> 1/2; with k=1 only d1 (rel 0) is looked at -> 0
    assert mrr_at(RANKING, RELS, 10) == 0.5
    assert mrr_at(RANKING, RELS, 1) == 0.0


def test_recall_by_hand():
    # relevant: d2, d4, d9 (3). Top 3 holds d2 -> 1/3; top 5 holds d2, d4 -> 2/3
    assert recall_at(RANKING, RELS, 3) == pytest.approx(1 / 3)
    assert recall_at(RANKING, RELS, 5) == pytest.approx(2 / 3)
    assert recall_at(RANKING, {"d1": 0}, 5) == 0.0


def test_precision_by_hand():
    # top 5 holds d2, d4 -> 2/5; k=10 still divides by 10 though only 5 docs were retrieved -> 2/10
    assert precision_at(RANKING, RELS, 5) == pytest.approx(2 / 5)
    assert precision_at(RANKING, RELS, 10) == pytest.approx(2 / 10)


def test_negative_relevance_counts_as_zero():
    # d1 = -1 at rank 1 adds nothing (not -1); DCG = 1/log2(3), ideal = 1 -> 0.6309
    rels = {"d1": -1, "d2": 1}
    assert ndcg_at(["d1", "d2"], rels, 10) == pytest.approx(1 / log2(3))
    assert mrr_at(["d1", "d2"], rels, 10) == 0.5
    assert recall_at(["d1"], rels, 10) == 0.0
    assert precision_at(["d1", "d2"], rels, 2) == 0.5


def test_ranked_breaks_ties_by_descending_doc_id():
    # string order, not numeric: "9" > "2" > "10"; case matters: "a" > "B"
    assert ranked({"10": 1.0, "9": 1.0, "2": 1.0, "x": 2.0, "a": 0.5, "B": 0.5}) == ["x", "9", "2", "10", "a", "B"]


def test_ranked_matches_pytrec_eval_order(trec):
    docs = {"10": 1.0, "9": 1.0, "2": 1.0, "x": 2.0, "a": 0.5, "B": 0.5, "b": 0.5, "MED-1": 0.5, "MED-10": 0.5,
            "z": -1.0, "y": -1.0}
    # with exactly one relevant doc, trec_eval's recip_rank is 1 / (that doc's rank in its own ordering)
    for rank, doc in enumerate(ranked(docs), 1):
        value = trec.RelevanceEvaluator({"q": {doc: 1}}, {"recip_rank"}).evaluate({"q": docs})["q"]["recip_rank"]
        assert value == pytest.approx(1 / rank), doc


# --- names and aggregation --------------------------------------------------------------------------------

def test_metric_fn_parses_any_cutoff():
    assert metric_fn("ndcg@3")(RANKING, RELS) == ndcg_at(RANKING, RELS, 3)
    assert metric_fn("mrr@1")(RANKING, RELS) == 0.0
    assert metric_fn("recall@1000")(RANKING, RELS) == pytest.approx(2 / 3)
    assert metric_fn("p@2")(RANKING, RELS) == 0.5
    assert set(METRICS) == {"ndcg@10", "mrr@10", "recall@100", "p@5"}
    assert METRICS["p@5"](RANKING, RELS) == precision_at(RANKING, RELS, 5)


@pytest.mark.parametrize("name", ["map", "ndcg", "ndcg@", "ndcg@0", "ndcg@x", "ndcg@10.5", "NDCG@10", "bleu@4"])
def test_metric_fn_rejects_unknown_names(name):
    with pytest.raises(CascadeError, match=r"supported are ndcg@K, mrr@K, recall@K, p@K"):
        metric_fn(name)


def test_per_query_covers_judged_queries_only():
    run = {"q1": {"a": 2.0, "b": 1.0}, "extra": {"a": 1.0}}
    qrels = {"q1": {"b": 1}, "missing": {"a": 1}, "none": {"a": 0}}
    out = per_query(run, qrels, ["ndcg@10", "mrr@10", "recall@100", "p@5"])
    assert set(out) == {"ndcg@10", "mrr@10", "recall@100", "p@5"}
    for values in out.values():
        assert set(values) == {"q1", "missing", "none"}
        assert values["missing"] == 0.0 and values["none"] == 0.0
    assert out["mrr@10"]["q1"] == 0.5 and out["recall@100"]["q1"] == 1.0 and out["p@5"]["q1"] == pytest.approx(0.2)


def test_per_query_rejects_unknown_metric_names():
    with pytest.raises(CascadeError, match="unknown metric 'map'"):
        per_query({}, {"q": {"a": 1}}, ["ndcg@10", "map"])


def test_mean():
    assert mean({}) == 0.0
    assert mean({"a": 1.0, "b": 0.0, "c": 0.5}) == pytest.approx(0.5)


# --- edge cases against trec_eval -------------------------------------------------------------------------

def test_edge_cases_match_pytrec_eval(trec):
    run = {
        "ties": {"d1": 1.0, "d2": 1.0, "d3": 1.0, "d4": 0.5, "d5": 0.5, "d10": 1.0},
        "no-relevant": {"d1": 3.0, "d2": 2.0},
        "unretrieved": {"d1": 3.0, "d2": 2.0, "d3": 1.0},
        "negative": {"d1": 3.0, "d2": 2.0, "d3": 1.0},
        "graded": {"d1": 5.0, "d2": 4.0, "d3": 3.0, "d4": 2.0, "d5": 1.0, "d6": 0.5},
        "not-judged": {"d1": 1.0},
    }
    qrels = {
        "ties": {"d2": 1, "d10": 2, "d5": 1, "d7": 0},
        "no-relevant": {"d1": 0, "d2": 0},  # judged, nothing relevant
        "unretrieved": {"d2": 1, "d99": 2},  # d99 relevant but absent from the run
        "negative": {"d1": -2, "d2": 1, "d3": -1, "d4": 1},
        "graded": {"d2": 1, "d4": 2, "d6": 2, "d8": 1},
        "missing": {"d1": 1},  # judged but absent from the run
    }
    ref = assert_matches_trec(trec, run, qrels)
    # trec_eval scores the query with nothing relevant 0 and skips the query missing from the run
    assert all(values["no-relevant"] == 0.0 for values in ref.values())
    assert all("missing" not in values and "not-judged" not in values for values in ref.values())
    # we score the missing query 0 on every metric instead of skipping it, and ignore unjudged run queries
    ours = per_query(run, qrels, list(TREC))
    assert all(values["missing"] == 0.0 and "not-judged" not in values for values in ours.values())


# --- real BM25 runs ---------------------------------------------------------------------------------------

def bm25_run(name: str, split: str) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """Top-DEPTH BM25 (bm25s, Lucene variant, Snowball stems, English stopwords) for every judged query."""
    root = BEIR / name
    if not (root / "corpus.jsonl.gz").is_file():
        pytest.fail(f"{name} not found at {root}: the tests need ../shared/data/beir beside the repo")
    with gzip.open(root / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        corpus = [json.loads(line) for line in fh if line.strip()]
    with open(root / "qrels" / f"{split}.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["query-id", "corpus-id", "score"]
    qrels: dict[str, dict[str, int]] = {}
    for qid, doc, rel in rows[1:]:
        qrels.setdefault(qid, {})[doc] = int(rel)
    with open(root / "queries.jsonl", encoding="utf-8") as fh:
        queries = {q["_id"]: q["text"] for q in map(json.loads, fh) if q["_id"] in qrels}

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(method="lucene")
    retriever.index(bm25s.tokenize([f"{d.get('title', '')} {d['text']}" for d in corpus], stopwords="en",
                                   stemmer=stemmer, show_progress=False), show_progress=False)
    vocab = retriever.vocab_dict
    ids = np.array([d["_id"] for d in corpus])
    tokens = bm25s.tokenize(list(queries.values()), stopwords="en", stemmer=stemmer, return_ids=False,
                            show_progress=False)
    run = {}
    for qid, terms in zip(queries, tokens):
        known = [t for t in terms if t in vocab]  # a query with none scores every doc 0: a 100-way tie
        scores = retriever.get_scores(known) if known else np.zeros(len(ids), dtype=np.float32)
        top = np.argpartition(-scores, DEPTH)[:DEPTH]  # unordered: ranking is the metrics' job
        run[qid] = {str(d): float(s) for d, s in zip(ids[top], scores[top])}
    return run, qrels


@pytest.fixture(scope="module")
def scifact_run():
    return bm25_run("scifact", "test")


@pytest.fixture(scope="module")
def nfcorpus_run():
    return bm25_run("nfcorpus", "dev")


def test_scifact_bm25_matches_pytrec_eval(trec, scifact_run):
    run, qrels = scifact_run
    assert len(qrels) == 300 and set(run) == set(qrels)
    ref = assert_matches_trec(trec, run, qrels)
    assert all(len(values) == 300 for values in ref.values())
    ours = per_query(run, qrels, list(TREC))
    assert 0.6 < mean(ours["ndcg@10"]) < 0.75  # published BM25 on SciFact: ~0.67


def test_nfcorpus_graded_bm25_matches_pytrec_eval(trec, nfcorpus_run):
    run, qrels = nfcorpus_run
    assert {r for rels in qrels.values() for r in rels.values()} == {1, 2}
    ref = assert_matches_trec(trec, run, qrels)
    assert all(len(values) == len(qrels) for values in ref.values())
    # graded gains matter here: a binary nDCG would differ on some queries
    binary = {q: {d: min(r, 1) for d, r in rels.items()} for q, rels in qrels.items()}
    assert per_query(run, binary, ["ndcg@10"])["ndcg@10"] != per_query(run, qrels, ["ndcg@10"])["ndcg@10"]


def test_paired_bootstrap_tells_a_real_change_from_noise():
    from cascade.evaluate.metrics import paired_bootstrap

    rng = np.random.default_rng(1)
    before = rng.uniform(0, 1, 300)
    assert paired_bootstrap(before, before) == (0.0, 0.0, 0.0)
    delta, low, high = paired_bootstrap(before, before + 0.05)  # every query gains 0.05: no doubt
    assert abs(delta - 0.05) < 1e-12 and abs(low - 0.05) < 1e-9 and abs(high - 0.05) < 1e-9
    noisy = before + rng.normal(0, 0.3, 300)  # no change on average, much change per query
    delta, low, high = paired_bootstrap(before, noisy)
    assert low < 0 < high and low < delta < high
    few = paired_bootstrap(before[:30], noisy[:30])  # fewer queries, wider interval
    assert few[2] - few[1] > high - low
    assert paired_bootstrap(before, noisy) == (delta, low, high)  # seeded: the same report every run
    with pytest.raises(CascadeError, match="equally long"):
        paired_bootstrap(before, before[:10])
