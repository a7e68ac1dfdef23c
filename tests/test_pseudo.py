"""The training-data engine: pseudo-queries, consistency filtering, contrast negatives, graded labels, source mix."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from cascade import CascadeError
from cascade.cli import main
from cascade.documents import chunk, load_documents
from cascade.train.adapt import verdict
from cascade.train.config import TrainConfig, TrainData
from cascade.train.data import Example
from cascade.train.losses import listwise_softmax, pairwise_margin, pointwise_bce
from cascade.train.prepare import prepare
from cascade.train.pseudo import (
    PseudoQuery,
    contrast_negative,
    filtered,
    flip_claim,
    pseudo_queries,
    words,
)
from cascade.train.trainer import Trainer
from tests.conftest import beir_slice, make_cross_encoder


@pytest.fixture(scope="module")
def slice_dir(scifact, tmp_path_factory):
    return beir_slice(scifact, tmp_path_factory.mktemp("pseudo-slice"), "train", 30, 150)


@pytest.fixture(scope="module")
def passages(slice_dir):
    return [p for d in load_documents(slice_dir) for p in chunk(d, 200, 40)]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def test_pseudo_queries_are_deterministic_one_per_document_and_of_every_kind(passages):
    made = pseudo_queries(passages, 60, seed=5)
    assert made == pseudo_queries(passages, 60, seed=5) and made != pseudo_queries(passages, 60, seed=6)
    assert len(made) == 60 and len({q.doc_id for q in made}) == 60
    assert {q.kind for q in made} == {"title", "cloze", "keywords"}
    for q in made:
        source = next(p for p in passages
                      if p.doc_id == q.doc_id and (q.positive in (p.text, p.content) or q.query in p.text))
        if q.kind == "title":  # the title asks; the body answers without repeating it
            assert q.query == source.title.strip() and q.positive == source.text and q.strip_titles
        elif q.kind == "cloze":  # the sentence is taken out of the passage it asks for
            assert q.query not in q.positive and q.positive.startswith(source.title)
        else:
            assert q.positive == source.content and len(q.query.split()) == 4
            assert set(q.query.split()) <= set(words(source.content))
    assert {q.kind for q in pseudo_queries(passages, 10, kinds=("keywords",))} == {"keywords"}
    with pytest.raises(CascadeError, match="unknown pseudo-query kind"):
        pseudo_queries(passages, 5, kinds=("questions",))
    with pytest.raises(CascadeError, match="needs an LLM endpoint"):
        pseudo_queries(passages, 5, kinds=("llm",))


def test_an_llm_writes_pseudo_queries_through_the_openai_client(passages, slice_dir, tmp_path):
    """InPars-style questions from a real OpenAI-compatible server on loopback (tests/llm_server.py)."""
    from cascade.rerank.llm import LLMReranker
    from cascade.train.pseudo import WRITER
    from tests.llm_server import ScriptedLLM

    server = ScriptedLLM()
    try:
        client = LLMReranker(server.url, "writer")
        made = pseudo_queries(passages, 6, kinds=("llm",), ask=lambda prompt: client.complete(prompt, WRITER))
        assert len(made) == 6 and {q.kind for q in made} == {"llm"}
        for q in made:
            source = next(p for p in passages if p.doc_id == q.doc_id and p.content == q.positive)
            assert q.query == f"What about {' '.join(source.content.split()[:5])}?"
        assert server.requests[0]["body"]["messages"][0]["content"] == WRITER
        # a failing endpoint or a non-question answer: that passage gets a kind that needs none instead
        server.script = [{"status": 500}] * 3 + [{"content": "ok"}]
        fallback = pseudo_queries(passages, 2, kinds=("llm", "keywords"), ask=lambda p: client.complete(p, WRITER))
        assert [q.kind for q in fallback][:1] == ["keywords"]
        data = prepare([slice_dir], TrainConfig(out=str(tmp_path), labels=False, pseudo_queries=30,
                                                llm_url=server.url, llm_model="writer"), progress=False)
        written = [ex for ex in data.examples if ex.qid.startswith("llm:")]  # --llm-url adds the kind
        assert written and all(ex.query.startswith("What about ") for ex in written)
    finally:
        server.stop()


def test_flip_claim_reverses_directions_and_negations():
    assert flip_claim("Vitamin D Increases bone density and raises calcium.") == \
        "Vitamin D Decreases bone density and lowers calcium."
    assert flip_claim("Statins do not lower mortality.") == "Statins do lower mortality."  # one flip, not two
    assert flip_claim("Smoking is linked to cancer.") == "Smoking is not linked to cancer."
    assert flip_claim("Cells divide.") is None


def test_contrast_negative_flips_only_what_the_query_states():
    passage = "Exercise increases insulin sensitivity and reduces weight; more sleep helps."
    pq = PseudoQuery("title", "Exercise increases insulin sensitivity", "d1", passage, False)
    assert contrast_negative(pq) == "Exercise decreases insulin sensitivity and reduces weight; more sleep helps."
    negated = PseudoQuery("cloze", "Coffee does not raise blood pressure", "d2", "Tea does not affect sleep.", False)
    assert contrast_negative(negated) == "Tea does affect sleep."
    assert contrast_negative(PseudoQuery("keywords", "insulin exercise", "d1", passage, False)) is None


def test_filter_keeps_queries_whose_source_the_first_stage_finds(passages):
    made = pseudo_queries(passages, 20, seed=1)
    index = {p.doc_id: i for i, p in enumerate(passages)}
    found = next(q for q in made if q.doc_id not in (passages[0].doc_id, passages[1].doc_id))
    pools = {q.query: [i for i in range(40) if passages[i].doc_id != q.doc_id] for q in made}
    pools[found.query] = [0, 1, index[found.doc_id]] + [i for i in range(3, 40) if passages[i].doc_id != found.doc_id]
    kept = filtered(made, passages, pools.__getitem__, keep_top=5, skip_top=1, progress=False)
    assert [pq for pq, _ in kept] == [found]  # the others' sources are not in their pools at all
    negatives = kept[0][1]
    contrast = contrast_negative(found)
    hard = negatives[1:] if contrast else negatives
    text = (lambda p: p.text) if found.strip_titles else (lambda p: p.content)
    assert hard[0] == text(passages[1])  # below the skipped top 1, never the source
    assert all(text(passages[index[found.doc_id]]) != n for n in hard)


def test_graded_losses_rank_grade_two_above_grade_one_above_zero():
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    targets = torch.tensor([[1.0, 1 / 3, 0.0]])  # gains 2^2-1 = 3 and 2^1-1 = 1, relative to the first
    by_hand = -(0.75 * torch.log_softmax(scores, 1)[0, 0] + 0.25 * torch.log_softmax(scores, 1)[0, 1])
    assert listwise_softmax(scores, targets).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert listwise_softmax(scores).item() == pytest.approx(-torch.log_softmax(scores, 1)[0, 0].item(), rel=1e-6)
    tie = torch.tensor([[1.0, 1.0, 0.0]])  # an equal-grade positive is no pair the hinge should push apart
    assert pairwise_margin(scores, tie).item() == pytest.approx(0.0)
    assert pointwise_bce(scores, targets).item() != pytest.approx(pointwise_bce(scores).item())


def test_sampling_mixes_sources_by_weight_and_puts_lower_grades_in_the_list(tmp_path):
    tiny = make_cross_encoder(tmp_path / "tiny")
    graded = [Example(f"g{i}", "q", ["best", "good"], ["bad"] * 3, grades=[2, 1], source="graded") for i in range(10)]
    plain = [Example(f"p{i}", "q", ["pos"], ["neg"] * 3, source="plain") for i in range(10)]
    config = TrainConfig(out=str(tmp_path / "out"), base=str(tiny), negatives=3, source_weights={"plain": 0.0})
    trainer = Trainer(config, TrainData(graded + plain, [], []))
    assert {trainer.data.examples[i].source for i in trainer.epoch_order()} == {"graded"}
    pairs, targets = trainer.sample(graded * 20)
    rows = [pairs[k * 4:(k + 1) * 4] for k in range(20)]
    with_lower = [(row, t) for row, t in zip(rows, targets.tolist()) if row[0][1] == "best" and row[1][1] == "good"]
    assert with_lower and all(t == pytest.approx([1.0, 1 / 3, 0.0, 0.0]) for _, t in with_lower)
    assert all(t[0] == 1.0 and t[1] in (0.0, pytest.approx(1 / 3)) for t in targets.tolist())
    config.source_weights = {"nowhere": 1.0}
    with pytest.raises(CascadeError, match="unknown source.*nowhere.*graded, plain"):
        trainer.epoch_order()


def test_prepare_mixes_labels_and_pseudo_queries_and_reads_no_qrels_without_labels(slice_dir, tmp_path):
    mixed = prepare([slice_dir], TrainConfig(out=str(tmp_path), pseudo_queries=20), progress=False)
    sources = {ex.source for ex in mixed.examples}
    assert sources == {slice_dir.name, f"pseudo:{slice_dir.name}"} and mixed.sources[0]["pseudo_queries"] > 10
    assert {q.source for q in mixed.dev} == {slice_dir.name}

    corpus_only = tmp_path / "corpus-only"  # no queries, no qrels: label-free adaptation needs none
    corpus_only.mkdir()
    shutil.copy(slice_dir / "corpus.jsonl", corpus_only / "corpus.jsonl")
    free = prepare([corpus_only], TrainConfig(out=str(tmp_path), labels=False, pseudo_queries=40), progress=False)
    assert free.dev and {q.source for q in free.dev} == {"pseudo:corpus-only"}
    assert all(ex.source == "pseudo:corpus-only" for ex in free.examples)
    assert not {q.qid for q in free.dev} & {ex.qid for ex in free.examples}  # held out
    assert all(list(q.rels) == [q.qid.split(":", 1)[1]] for q in free.dev)
    with pytest.raises(CascadeError, match="pseudo-queries"):
        prepare([corpus_only], TrainConfig(out=str(tmp_path), labels=False), progress=False)


def test_train_cli_takes_pseudo_queries_and_source_weights(slice_dir, tmp_path, capsys):
    tiny = make_cross_encoder(tmp_path / "tiny")
    out = tmp_path / "model"
    assert main(["train", str(slice_dir), "--out", str(out), "--base", str(tiny), "--max-steps", "2",
                 "--eval-every", "2", "--batch-queries", "2", "--negatives", "2", "--max-length", "64",
                 "--pseudo-queries", "10", "--pseudo-kinds", "title,keywords", "--source-weight",
                 f"pseudo:{slice_dir.name}=2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "trained 2 steps" in printed and f"{slice_dir.name}: first stage" in printed
    args = json.loads((out / "training_args.json").read_text())
    assert args["pseudo_kinds"] == ["title", "keywords"] and args["source_weights"] == {f"pseudo:{slice_dir.name}": 2.0}
    card = (out / "README.md").read_text()
    assert "Pseudo-queries" in card and "base_model:" in card and "blended (what search runs)" in card
    for bad in (["--source-weight", "scifact"], ["--source-weight", "x=-1"], ["--pseudo-kinds", "questions"]):
        with pytest.raises(SystemExit):
            main(["train", str(slice_dir), "--out", str(tmp_path / "x"), *bad])
    assert "NAME=WEIGHT" in capsys.readouterr().err


def test_verdict_ships_only_what_beats_the_alternatives():
    assert verdict(0.5, 0.6, 0.7, "new", "old")[0] == "new"
    assert verdict(0.5, 0.6, 0.55, "new", "old")[0] == "old"
    choice, why = verdict(0.7, 0.6, 0.65, "new", "old")
    assert choice is None and "does not pay" in why


def test_adapt_improves_held_out_pseudo_queries_and_the_index_follows_it(slice_dir, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cascade import Cascade
    from cascade.models.hub import DEFAULT_ENCODER, bundled_path

    index = tmp_path / "index"
    Cascade.build(load_documents(slice_dir), index, reranker=None, progress=False)
    out, base = tmp_path / "adapted", str(tmp_path / "fresh-head")
    torch.manual_seed(0)  # MiniLM's real weights under a fresh scoring head: adapting must teach it something
    minilm = bundled_path(DEFAULT_ENCODER)
    AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=1).save_pretrained(base)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(base)
    quick = ["--pseudo-queries", "120", "--batch-queries", "4", "--eval-every", "6", "--max-length", "64", "--lr", "1e-4",
             "--quiet"]
    assert main(["adapt", str(index), "--out", str(out), "--base", base, "--max-steps", "12", *quick]) == 0
    printed = capsys.readouterr().out
    record = json.loads((index / "reranker.json").read_text())
    assert record["adapted_model"]["alone"] > record["starting_model"]["alone"]  # it learned this corpus
    assert record["held_out_queries"] >= 10 and "held-out pseudo-queries" in printed and "reranker.json" in printed
    engine = Cascade.load(index)  # "auto" follows the record
    if record["reranker"] is None:
        assert engine.reranker is None and "does not pay" in engine.rerank_unavailable
    else:
        assert Path(record["reranker"]) in (out.resolve(), Path(base)) and engine.reranker is not None
    assert Cascade.load(index, reranker=None).reranker is None  # an explicit choice still wins

    assert main(["adapt", str(index), "--out", str(out), "--base", base, "--max-steps", "18", *quick,
                 "--resume"]) == 0  # continues from step 12
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 18 and [h["step"] for h in state["history"]] == list(range(19))  # 0: the base
    (index / "reranker.json").write_text("{not json")
    with pytest.raises(CascadeError, match="reranker.json is corrupted"):
        Cascade.load(index)
