"""Late interaction: MaxSim math, the token store, index-time vectors, and the stage in the cascade."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cascade.cli import main
from cascade.errors import CascadeError
from cascade.rerank.late_interaction import LateInteraction
from cascade.retrieve.tokens import TokenStore, maxsim
from tests.conftest import DOCS, write_jsonl


def test_maxsim_by_hand():
    query = np.array([[1.0, 0.0], [0.0, 1.0]])
    docs = np.array([[0.6, 0.8], [1.0, 0.0],  # doc 0: best for q1 is 1.0, for q2 is 0.8 -> 1.8
                     [0.0, -1.0]])  # doc 1: q1 -> 0.0, q2 -> -1.0 -> -1.0
    assert maxsim(query, docs, [2, 1]) == pytest.approx([1.8, -1.0])
    assert maxsim(query, np.empty((0, 2)), [0, 0]).tolist() == [0.0, 0.0]
    assert maxsim(query, docs[:1], [0, 1, 0]) == pytest.approx([0.0, 1.4, 0.0])  # empty documents score 0


@pytest.mark.parametrize("dtype, tolerance", [("fp16", 2e-3), ("int8", 2e-2)])
def test_token_store_round_trip(tmp_path, dtype, tolerance):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(n, 8)).astype(np.float32) for n in (3, 1, 5)]
    arrays = [a / np.linalg.norm(a, axis=1, keepdims=True) for a in arrays]
    store = TokenStore.from_arrays(arrays, 8, dtype)
    assert store.size == 3 and store.dim == 8 and store.dtype == dtype
    store.save(tmp_path / "late")
    loaded = TokenStore.load(tmp_path / "late")
    assert isinstance(loaded.vectors, np.memmap)  # read lazily from disk
    for i, a in enumerate(arrays):
        assert np.abs(loaded.get(i) - a).max() < tolerance
    query = rng.normal(size=(4, 8)).astype(np.float32)
    exact = [maxsim(query, a, [len(a)])[0] for a in arrays]
    assert loaded.score(query, [2, 0]) == pytest.approx([exact[2], exact[0]], abs=4 * tolerance * 4)
    with pytest.raises(CascadeError, match="unknown late-interaction dtype"):
        TokenStore.from_arrays(arrays, 8, "int4")


@pytest.fixture(scope="module")
def late_index(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("late")
    src = write_jsonl(tmp / "docs.jsonl", DOCS)
    assert main(["index", str(src), "--out", str(tmp / "idx"), "--quiet", "--late-interaction"]) == 0
    return tmp / "idx"


def test_index_stores_token_vectors_and_reports_their_size(late_index):
    manifest = json.loads((late_index / "manifest.json").read_text())
    info = manifest["late_interaction"]
    assert info["model"] == "sentence-transformers/all-MiniLM-L6-v2" and info["dim"] == 384 and info["dtype"] == "int8"
    assert info["tokens"] > 6 * 8 and info["bytes_per_passage"] == round(info["bytes"] / 6)
    assert any(name.startswith("late/") for name in manifest["files"])


def test_stored_scores_equal_the_standalone_reranker(late_index):
    from cascade import Cascade

    engine = Cascade.load(late_index, reranker=None, cache=None)
    run = engine.run_stages("what raises the tides?", retrieve=6, rerank_depth=0, late_depth=6, blend=0)
    ids, scores = run.heads["late"]
    standalone = LateInteraction()
    contents = [engine.index.passages[int(i)].content for i in ids]
    direct = standalone.predict([("what raises the tides?", c) for c in contents])
    assert scores == pytest.approx(direct, rel=2e-2)  # int8 storage, fp16 copies, bf16 vs fp32 encoding
    assert engine.index.passages[int(ids[0])].doc_id == "s-1"
    with pytest.raises(CascadeError, match=r"rerank_depth \(3\) must be <= late_depth \(2\)"):
        engine.run_stages("tides", retrieve=6, rerank_depth=3, late_depth=2)
    assert standalone.rank("what raises the tides?", contents, top_k=1)[0]["corpus_id"] == 0


def test_search_with_late_then_cross_encoder(late_index, tiny_ce, capsys):
    assert main(["search", str(late_index), "vitamin D and sunlight", "--reranker", str(tiny_ce), "--json",
                 "--stages", "hybrid:6,late:4,rerank:2", "--top", "6"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "late" in out["timings_ms"] and out["rerank"]["depth"] == 2
    ranks = [h["stage_ranks"] for h in out["hits"]]
    assert sorted(r["late"] for r in ranks if r["late"]) == [1, 2, 3, 4]
    assert all(r["rerank"] is None or r["late"] <= 2 for r in ranks)  # the cross-encoder saw the late top 2 only
    assert [r["late"] for r in ranks[2:4]] == [3, 4]  # late order below the reranked head


@pytest.mark.parametrize("args, message", [
    (["--late-depth", "3"], "no late-interaction vectors"),
    (["--stages", "hybrid:5,rerank:3,late:4"], "follow the order"),
    (["--stages", "late:4"], "start with hybrid"),
    (["--stages", "hybrid:5,late"], "needs a depth"),
    (["--stages", "hybrid:5,colbert:3"], "unknown stage"),
])
def test_stage_errors_are_one_line(small_index, late_index, args, message, capsys):
    index = small_index if "no late" in message else late_index
    assert main(["search", str(index), "tides", "--no-rerank", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_reindex_reuses_token_vectors_and_fp16_doubles_the_size(tmp_path, capsys):
    docs = [dict(d) for d in DOCS]
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    idx = tmp_path / "idx"
    assert main(["index", str(src), "--out", str(idx), "--quiet", "--late-interaction"]) == 0
    from cascade.index import Index

    before = Index.load(idx)
    docs[0]["text"] = "Rate limiting sheds load so that queues stay short."
    write_jsonl(src, docs)
    capsys.readouterr()
    assert main(["index", str(src), "--out", str(idx), "--quiet"]) == 0  # keeps late interaction, re-encodes one
    assert "encoded 1, reused 5" in capsys.readouterr().out
    after = Index.load(idx)
    assert after.manifest["late_interaction"]["model"] == before.manifest["late_interaction"]["model"]
    assert np.array_equal(after.late.get(5), before.late.get(5))
    assert not np.array_equal(after.late.get(0), before.late.get(0))

    assert main(["index", str(src), "--out", str(idx), "--quiet", "--late-dtype", "fp16"]) == 0
    fp16 = Index.load(idx).manifest["late_interaction"]
    assert fp16["dtype"] == "fp16" and after.manifest["late_interaction"]["bytes"] < 0.6 * fp16["bytes"]
    assert main(["index", str(src), "--out", str(idx), "--quiet", "--no-late-interaction"]) == 0
    assert "late_interaction" not in Index.load(idx).manifest
