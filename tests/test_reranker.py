import json
import shutil

import numpy as np
import pytest
import torch

from cascade import CascadeError, CrossEncoder
from cascade.models.hub import BUNDLED_RERANKER, BUNDLED_RERANKERS, DEFAULT_ENCODER, DEFAULT_RERANKER, bundled_path
from cascade.models.runtime import cpu_has_fast_bf16, length_sorted_batches
from cascade.rerank import load_reranker
from tests.conftest import assert_within_bound, make_cross_encoder

PAIRS = [
    ("rate limiting latency", "Rate limiting increases latency under load when clients retry."),
    ("rate limiting latency", "short"),
    ("vitamin d", "Sunlight lets the skin make vitamin D, which helps bones absorb calcium " * 5),
    ("tides", "The Moon's gravity raises tides."),
    ("a much longer query about databases and indexes and their costs", "B-tree indexes slow writes."),
]


PRECISIONS = ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else [])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_predict_is_batch_invariant_and_in_input_order(tiny_ce, precision):
    """Batching must not move any pair's score past the precision's bound, nor change its position."""
    ce = CrossEncoder(str(tiny_ce), precision=precision)
    one_by_one = np.array([ce.predict([p], raw_scores=True)[0] for p in PAIRS])
    for batch_size in (1, 2, 32):
        assert_within_bound(ce.predict(PAIRS, batch_size=batch_size, raw_scores=True), one_by_one, ce.dtype)
    mixed = ce.predict(PAIRS[::-1] + [("other", "query in the same batch " * 20)] * 3, batch_size=8, raw_scores=True)
    assert_within_bound(mixed[: len(PAIRS)][::-1], one_by_one, ce.dtype)
    if precision == "fp32":  # a real model gives distinct scores (the tiny one's bf16 ones crowd within 1e-4)
        assert len(set(np.round(one_by_one, 5))) == len(PAIRS)


def test_the_bundled_model_scores_a_pair_alike_alone_and_batched():
    """The real model at the process's precision: a lone pair (the case that used to move by 2.8% in bf16)
    and the same pair micro-batched with others stay within the bound."""
    ce = CrossEncoder("cascade-reranker", warm_up=False)
    pairs = [(q, d) for q, d in PAIRS] * 2
    batched = ce.predict(pairs, batch_size=len(pairs), raw_scores=True)
    assert_within_bound([ce.predict([p], raw_scores=True)[0] for p in PAIRS], batched[: len(PAIRS)], ce.dtype)


def test_bf16_scores_track_fp32(tiny_ce):
    fp32 = CrossEncoder(str(tiny_ce), precision="fp32").predict(PAIRS, raw_scores=True)
    bf16 = CrossEncoder(str(tiny_ce), precision="bf16").predict(PAIRS, raw_scores=True)
    assert not np.array_equal(bf16, fp32)  # bf16 really ran
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_length_sorted_batches_group_similar_lengths():
    batches = [b.tolist() for b in length_sorted_batches([3, 9, 1, 7, 5], batch_size=2)]
    assert batches == [[1, 3], [4, 0], [2]]
    # a batch never spans two padded lengths (multiples of PAD_MULTIPLE): 40 and 33 pad to 64, 30 to 32
    assert [b.tolist() for b in length_sorted_batches([30, 40, 33, 5], batch_size=3)] == [[1, 2], [0, 3]]
    with pytest.raises(CascadeError):
        list(length_sorted_batches([1], 0))


def test_rank_matches_sentence_transformers_shape(tiny_ce):
    ce = CrossEncoder(str(tiny_ce))
    docs = [d for _, d in PAIRS]
    ranked = ce.rank("rate limiting latency", docs, top_k=3, return_documents=True)
    assert len(ranked) == 3
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert all(docs[r["corpus_id"]] == r["text"] for r in ranked)
    scores = ce.predict([("rate limiting latency", d) for d in docs])
    assert ranked[0]["corpus_id"] == int(np.argmax(scores))
    assert "text" not in ce.rank("q", docs)[0]
    with pytest.raises(CascadeError, match="query is empty"):
        ce.rank("  ", docs)
    with pytest.raises(CascadeError, match="not one string"):
        ce.rank("q", "a single string")


def test_predict_speaks_sentence_transformers_and_scores_like_it(tiny_ce):
    """A drop-in: the same call with the same keyword arguments gives what sentence-transformers gives."""
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    ours, theirs = CrossEncoder(str(tiny_ce), precision="fp32"), STCrossEncoder(str(tiny_ce), device="cpu")
    for kwargs in ({}, {"activation_fn": torch.nn.Identity()}, {"show_progress_bar": False, "convert_to_numpy": True}):
        np.testing.assert_allclose(ours.predict(PAIRS, batch_size=4, **kwargs),
                                   theirs.predict(PAIRS, batch_size=4, **kwargs), atol=1e-4)
    raw = ours.predict(PAIRS, raw_scores=True)
    np.testing.assert_allclose(ours.predict(PAIRS), 1 / (1 + np.exp(-raw)), atol=1e-6)  # [0, 1]: thresholds carry over
    assert isinstance(ours.predict(PAIRS, convert_to_tensor=True), torch.Tensor)
    docs = [d for _, d in PAIRS]
    logits = ours.predict([("rate limiting latency", d) for d in docs], raw_scores=True)
    ranked = ours.rank("rate limiting latency", docs, raw_scores=True)
    assert [r["score"] for r in ranked] == pytest.approx(sorted(logits, reverse=True), abs=1e-5)


def test_bi_encoder_is_refused_as_reranker():
    with pytest.raises(CascadeError, match="not a cross-encoder: its architecture is BertModel"):
        CrossEncoder(str(bundled_path(DEFAULT_ENCODER)))


def test_multi_label_classifier_is_refused(tmp_path):
    path = make_cross_encoder(tmp_path / "two", num_labels=2)
    with pytest.raises(CascadeError, match="2 output labels"):
        CrossEncoder(str(path))


def test_missing_or_bad_model_dirs(tmp_path):
    with pytest.raises(CascadeError, match="model directory not found"):
        CrossEncoder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CascadeError, match="no config.json"):
        CrossEncoder(str(tmp_path / "empty"))


def test_unknown_hub_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CascadeError, match="could not load reranker 'nobody/no-such-model'"):
        CrossEncoder("nobody/no-such-model")


def test_resolution_explicit_bundled_cached_unavailable(tiny_ce, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("cascade.models.hub.WEIGHTS_DIR", tmp_path / "no-bundle")
    choice = load_reranker()
    assert choice.reranker is None and DEFAULT_RERANKER in choice.reason and "--reranker" in choice.reason

    # the default id, present in the local Hugging Face cache (the layout huggingface_hub writes)
    repo = tmp_path / "hub" / ("models--" + DEFAULT_RERANKER.replace("/", "--"))
    shutil.copytree(tiny_ce, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    choice = load_reranker()
    assert choice.reranker is not None and choice.reranker.model_id == DEFAULT_RERANKER

    bundled = make_cross_encoder(tmp_path / "weights" / BUNDLED_RERANKERS[BUNDLED_RERANKER], seed=1)
    monkeypatch.setattr("cascade.models.hub.WEIGHTS_DIR", tmp_path / "weights")
    choice = load_reranker()
    assert choice.reranker.path == str(bundled) and choice.reranker.model_id == BUNDLED_RERANKER
    assert load_reranker(str(tiny_ce)).reranker.path == str(tiny_ce)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error(tiny_ce):
    with pytest.raises(CascadeError, match="CUDA is not available"):
        CrossEncoder(str(tiny_ce), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scores_track_cpu(tiny_ce):
    cpu = CrossEncoder(str(tiny_ce), precision="fp32").predict(PAIRS, raw_scores=True)
    gpu = CrossEncoder(str(tiny_ce), device="cuda")  # bf16 (or fp16) weights
    assert gpu.dtype is not None and next(gpu.model.parameters()).is_cuda
    np.testing.assert_allclose(gpu.predict(PAIRS, raw_scores=True), cpu, atol=0.05)


def test_weights_are_cast_once_and_warm_up_seeds_the_cost_model(tiny_ce):
    ce = CrossEncoder(str(tiny_ce), precision="bf16")
    assert next(ce.model.parameters()).dtype == torch.bfloat16
    assert ce.cost.ms_per_token is not None and ce.cost.ms_per_token > 0
    cold = CrossEncoder(str(tiny_ce), precision="fp32", warm_up=False)
    assert next(cold.model.parameters()).dtype == torch.float32 and cold.cost.ms_per_token is None
    cold.predict(PAIRS)
    assert cold.cost.ms_per_token > 0  # every scored batch feeds the estimate


@pytest.mark.parametrize("name", ["cascade-reranker", "cascade-reranker-fast"])
def test_bundled_model_cards_say_what_the_hub_needs(name):
    from cascade.models.hub import bundled_path

    card = (bundled_path(name) / "README.md").read_text()
    front = card.split("---")[1]
    assert "pipeline_tag: text-ranking" in front and "base_model: sentence-transformers/all-MiniLM-L6-v2" in front
    window = json.loads((bundled_path(name) / "tokenizer_config.json").read_text())["model_max_length"]
    assert f"Max length {window} tokens" in card and f'CrossEncoder("{name}")' in card
