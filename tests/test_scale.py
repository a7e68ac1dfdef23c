"""Scaling: shards equal one index, ANN indexes find what exact search finds, Ray gives the embedded results."""

import json
import shutil

import numpy as np
import pytest

from cascade import Cascade, CascadeError
from cascade.cli import main
from cascade.evaluate.beir import load_split
from cascade.evaluate.runner import evaluate
from cascade.index import Index
from cascade.retrieve.bm25 import BM25
from cascade.retrieve.dense import DenseIndex
from tests.conftest import assert_same_order_beyond_bound, assert_within_bound, beir_slice


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, scifact):
    """SciFact test: 60 queries, their judged documents and 340 others; and its unsharded index."""
    root = tmp_path_factory.mktemp("scale")
    (root / "data").mkdir()
    data = beir_slice(scifact, root / "data", "test", n_queries=60, distractors=340)
    assert main(["index", str(data), "--out", str(root / "one"), "--quiet"]) == 0
    return data, root / "one"


def queries(data):
    return [json.loads(line)["text"] for line in (data / "queries.jsonl").read_text().splitlines()]


def first_stages(engine, query):
    r = engine.run_stages(query, retrieve=100, rerank_depth=0)
    return r.bm25, r.dense, r.fusion


def test_sharded_index_returns_exactly_what_one_index_returns(corpus, tmp_path, capsys):
    data, one = corpus
    sharded = shutil.copytree(one, tmp_path / "sharded")
    assert main(["index", str(data), "--out", str(sharded), "--shards", "3", "--quiet"]) == 0
    a, b = Cascade.load(one, reranker=None), Cascade.load(sharded, reranker=None)
    # vectors carried over by digest into new shards
    assert f"encoded 0, reused {len(a.index.passages)}," in capsys.readouterr().out
    sizes = [len(s.passages) for s in b.index.shards]
    assert len(sizes) == 3 and min(sizes) > 0.25 * sum(sizes) and sum(sizes) == len(a.index.passages)
    for shard in b.index.shards:  # shards hold whole documents
        assert not {p.doc_id for p in shard.passages} & {p.doc_id for s in b.index.shards if s is not shard
                                                            for p in s.passages}
    for q in queries(data):
        for (ia, sa), (ib, sb) in zip(first_stages(a, q), first_stages(b, q)):
            assert np.array_equal(ia, ib)
            np.testing.assert_allclose(sa, sb, rtol=0, atol=1e-6)
    # the global statistics are what makes this work: the same shard scored with its own disagrees
    shard = b.index.shards[0]
    alone = BM25.build([p.content for p in shard.passages])
    q = queries(data)[0]
    assert shard.bm25.collection.passages == len(a.index.passages)
    assert not np.allclose(alone.scores(q), shard.bm25.scores(q))


def test_ann_indexes_recall_what_exact_search_finds(corpus, tmp_path):
    data, one = corpus
    engine = Cascade.load(one, reranker=None)
    vectors = np.asarray(engine.index.dense.vectors())
    query_vectors = engine.encoder.encode(queries(data))
    exact = DenseIndex.from_vectors(vectors, "flat")
    for kind, params in (("hnsw", {"m": 16}), ("ivfpq", {"nlist": 8, "pq_m": 48, "nbits": 6})):
        ann = DenseIndex.from_vectors(vectors, kind, params)
        recall = np.mean([len(np.intersect1d(ann.search(q, 50)[0], exact.search(q, 50)[0])) / 50
                          for q in query_vectors])
        assert recall >= 0.9, (kind, recall)
        ann.save(tmp_path / kind)
        loaded = DenseIndex.load(tmp_path / kind)  # memory-mapped, same answers
        assert np.array_equal(loaded.search(query_vectors[0], 20)[0], ann.search(query_vectors[0], 20)[0])
        assert loaded.spec["kind"] == kind
    with pytest.raises(CascadeError, match="unknown hnsw parameter"):
        DenseIndex.from_vectors(vectors, "hnsw", {"nprobe": 4})
    with pytest.raises(CascadeError, match="unknown ANN kind"):
        DenseIndex.from_vectors(vectors, "lsh")


def test_index_with_hnsw_reports_recall_in_eval(corpus, tmp_path, capsys):
    data, one = corpus
    idx = shutil.copytree(one, tmp_path / "hnsw")
    assert main(["index", str(data), "--out", str(idx), "--ann", "hnsw", "--ann-param", "ef_search=300",
                 "--quiet"]) == 0
    assert "dense search hnsw" in capsys.readouterr().out
    index = Index.load(idx)
    assert index.manifest["ann"][0] == {"kind": "hnsw", "m": 32, "ef_construction": 80, "ef_search": 300}
    engine = Cascade.load(idx, reranker=None)
    result = evaluate(engine, load_split(data, "test"), stages=["dense"], limit=20, progress=False)
    assert result.settings["ann_recall@200"] >= 0.95
    with pytest.raises(SystemExit):
        main(["index", str(data), "--out", str(idx), "--ann-param", "ef_search", "--quiet"])
    assert "expected NAME=INTEGER" in capsys.readouterr().err


def test_ray_builds_and_searches_like_the_embedded_path(corpus, tmp_path):
    ray = pytest.importorskip("ray")
    from cascade.distributed import search_many
    from cascade.runners import RayRunner

    data, one = corpus
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runner = RayRunner()
        assert main(["index", str(data), "--out", str(tmp_path / "ray"), "--shards", "2", "--ray", "--quiet"]) == 0
        a, b = Cascade.load(one, reranker=None), Cascade.load(tmp_path / "ray", reranker=None)
        assert len(b.index.shards) == 2
        same_top10 = 0
        texts = queries(data)
        for q in texts:
            (ba, bs_a), (da, ds_a), (fa, _) = first_stages(a, q)
            (bb, bs_b), (db, ds_b), (fb, _) = first_stages(b, q)
            assert np.array_equal(ba, bb) and np.array_equal(bs_a, bs_b)  # BM25: identical
            # dense: the workers batch passages differently and run one thread each (with the backend and precision
            # this process chose, `Encoder.settled`); a passage's vector
            # may change only within the precision's stated bound, and only near-ties may swap
            assert_within_bound(ds_b[:10], ds_a[:10], a.encoder.dtype)
            assert_same_order_beyond_bound(da[:10], ds_a[:10], db, ds_b, a.encoder.dtype)
            same_top10 += np.array_equal(fa[:10], fb[:10])
        assert same_top10 >= 0.95 * len(texts)
        local = [a.search(q, top=5, rerank_depth=0) for q in texts[:20]]
        remote = search_many(str(one), texts[:20], runner=runner, reranker=None, batch=7, top=5, rerank_depth=0)
        assert [[h.id for h in r.hits] for r in local] == [[h["id"] for h in r["hits"]] for r in remote]
    finally:
        ray.shutdown()
