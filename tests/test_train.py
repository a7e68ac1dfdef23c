"""Training end to end on CPU: a tiny model, a slice of SciFact, a few steps."""

import json
import re
import stat

import numpy as np
import pytest
import torch

from cascade import CascadeError, CrossEncoder
from cascade.cli import main
from cascade.fileio import FILE_MODE
from cascade.train.config import TrainConfig
from cascade.train.data import hold_out
from cascade.train.distill import ensemble, score_with_teachers
from cascade.train.prepare import prepare
from cascade.train.surgery import keep_layers
from cascade.train.trainer import Trainer
from tests.conftest import beir_slice, make_cross_encoder


@pytest.fixture(scope="module")
def scifact_train_slice(scifact, tmp_path_factory):
    """60 SciFact training queries, their abstracts and 200 distractors, in BEIR layout (no dev split)."""
    return beir_slice(scifact, tmp_path_factory.mktemp("scifact-train"), "train", 60, 200)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def test_hold_out_is_seeded_and_disjoint():
    qids = [str(i) for i in range(50)]
    train, dev = hold_out(qids, 0.1, seed=3)
    assert len(dev) == 5 and not set(train) & set(dev) and sorted(train + dev) == sorted(qids)
    assert hold_out(qids, 0.1, seed=3) == (train, dev) and hold_out(qids, 0.1, seed=4) != (train, dev)
    assert len(hold_out(qids[:40], 0.25, seed=3)[1]) == 10  # `cascade train --dev-fraction 0.25`


def test_dev_fraction_reaches_the_config_and_bad_values_are_refused(capsys):
    from cascade.cli.commands import training_config
    from cascade.cli.parser import build_parser

    args = build_parser().parse_args(["train", "data", "--out", "x", "--dev-fraction", "0.25"])
    args.argv = ["train", "data", "--out", "x", "--dev-fraction", "0.25"]
    assert training_config(args).dev_fraction == 0.25
    for bad in ("1.5", "0", "a quarter"):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(["train", "data", "--out", "x", "--dev-fraction", bad])
        assert exit_.value.code == 2 and "--dev-fraction" in capsys.readouterr().err


def test_mining_gives_positives_and_hard_negatives(scifact_train_slice, tmp_path):
    data = prepare([scifact_train_slice], TrainConfig(out=str(tmp_path)), progress=False)
    assert data.sources[0]["dev"] == "seeded 10% of train" and data.sources[0]["dev_queries"] == 6
    assert len(data.examples) >= 50
    for ex in data.examples:
        assert ex.positives and ex.negatives and not set(ex.positives) & set(ex.negatives)
    assert all(len(q.candidates) == 30 for q in data.dev)


def test_easy_negatives_and_positive_cap(scifact_train_slice, tmp_path):
    plain = prepare([scifact_train_slice], TrainConfig(out=str(tmp_path)), progress=False)
    mixed = prepare([scifact_train_slice], TrainConfig(out=str(tmp_path), easy_negatives=5, max_positives=1),
                    progress=False)
    for a, b in zip(plain.examples, mixed.examples):
        assert a.qid == b.qid and b.negatives[: len(a.negatives)] == a.negatives  # hard ones first, unchanged
        easy = b.negatives[len(a.negatives):]
        assert len(easy) == 5 and not set(easy) & set(a.positives) and len(set(b.negatives)) == len(b.negatives)
        assert b.positives == a.positives[:1]
    again = prepare([scifact_train_slice], TrainConfig(out=str(tmp_path), easy_negatives=5), progress=False)
    assert [e.negatives for e in again.examples] == [
        e.negatives for e in prepare([scifact_train_slice], TrainConfig(out=str(tmp_path), easy_negatives=5),
                                     progress=False).examples]  # seeded


def test_fresh_head_trains_faster_than_the_encoder(tiny_ce, tmp_path, scifact_train_slice):
    from cascade.models.hub import DEFAULT_ENCODER, bundled_path

    data = prepare([scifact_train_slice], TrainConfig(out=str(tmp_path)), progress=False)
    fresh = Trainer(TrainConfig(out=str(tmp_path), base=str(bundled_path(DEFAULT_ENCODER)), lr=2e-5), data)
    assert [g["initial_lr"] for g in fresh.optimizer.param_groups] == [2e-5, 1e-3]
    head = {id(p) for p in fresh.optimizer.param_groups[1]["params"]}
    named = dict(fresh.model.named_parameters())
    assert head == {id(p) for n, p in named.items() if n.startswith("classifier") or ".pooler." in n} and head
    trained = Trainer(TrainConfig(out=str(tmp_path), base=str(tiny_ce), lr=2e-5), data)  # its head is trained
    assert [g["initial_lr"] for g in trained.optimizer.param_groups] == [2e-5, 2e-5]


def test_loss_falls_model_reloads_and_resume_continues(scifact_train_slice, tmp_path):
    out = tmp_path / "model"  # the real MiniLM base (a random tiny BERT learns nothing in 30 steps), short pairs
    config = TrainConfig(out=str(out), lr=1e-4, max_steps=30, eval_every=10, negatives=3, batch_queries=4,
                         max_length=64, patience=10)
    data = prepare([scifact_train_slice], config, progress=False)
    result = Trainer(config, data).run(progress=False)
    losses = [h["loss"] for h in result.history]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])  # it learns
    assert result.steps == 30 and result.best_step in (10, 20, 30)
    assert [h["step"] for h in result.history if "dev_ndcg@10" in h] == [10, 20, 30]

    reloaded = CrossEncoder(str(out))  # a plain HF folder that our loader accepts
    scores = reloaded.predict([("vitamin D", "vitamin D and bone density"), ("vitamin D", "galaxy formation")])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    card = (out / "README.md").read_text()
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {
        f.name: FILE_MODE for f in out.iterdir()}  # the weights too, which transformers writes as 0600
    assert "license: apache-2.0" in card and f"{result.best_dev_ndcg:.4f}" in card

    more = TrainConfig(**{**config.__dict__, "max_steps": 40, "resume": True})
    resumed = Trainer(more, data).run(progress=False)
    assert resumed.steps == 40 and len(resumed.history) == 40


def test_a_run_from_a_trained_reranker_never_ends_below_it(scifact_train_slice, tmp_path):
    """The starting model is evaluated as step 0: a continued run that only harms (here lr 1.0) ships its base."""
    from cascade.models.hub import resolve

    config = TrainConfig(out=str(tmp_path / "m"), base="cascade-reranker", lr=1.0, max_steps=4, eval_every=2,
                         negatives=2, batch_queries=2, max_length=64, patience=5)
    result = Trainer(config, prepare([scifact_train_slice], config, progress=False)).run(progress=False)
    evals = {h["step"]: h["dev_ndcg@10"] for h in result.history if "dev_ndcg@10" in h}
    assert list(evals) == [0, 2, 4] and evals[0] > max(evals[2], evals[4]) and result.best_step == 0
    pairs = [("vitamin D deficiency", "Vitamin D levels and bone density in adults"), ("vitamin D", "galaxy formation")]
    base = CrossEncoder(resolve("cascade-reranker"), precision="fp32").predict(pairs)
    np.testing.assert_allclose(CrossEncoder(config.out, precision="fp32").predict(pairs), base, atol=1e-3)


def test_train_cli_end_to_end(scifact_train_slice, tiny_ce, tmp_path, capsys):
    out = tmp_path / "cli-model"
    assert main(["train", str(scifact_train_slice), "--out", str(out), "--base", str(tiny_ce), "--max-steps", "4",
                 "--eval-every", "2", "--batch-queries", "2", "--negatives", "2", "--max-length", "96", "--loss",
                 "margin", "--max-positives", "1"]) == 0
    captured = capsys.readouterr()
    assert "trained 4 steps" in captured.out
    # no terminal: no bars, but a log of a long run gets a line per milestone, with the pace and time left
    assert "preparing training data" in captured.err and "training queries" in captured.err
    assert re.search(r"step 0 \(the base model\): dev nDCG@10 [01]\.\d{4}", captured.err)  # its head is trained
    assert re.search(r"step 2/4: dev nDCG@10 [01]\.\d{4} \(best .* at step [02]\); [\d.]+ s/step, about \d+ min "
                     r"left", captured.err)
    assert "step 4/4" in captured.err and "\r" not in captured.err
    assert json.loads((out / "training_args.json").read_text())["max_positives"] == 1
    assert (out / "config.json").is_file() and (out / "checkpoint.pt").is_file()
    assert "cascade train" in (out / "README.md").read_text()
    with pytest.raises(SystemExit):  # argparse rejects an unknown loss with a usage line
        main(["train", str(scifact_train_slice), "--out", str(tmp_path / "x"), "--loss", "nope"])


def test_keep_layers_copies_the_teachers_layers(tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(make_cross_encoder(tmp_path / "t6", layers=6))
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "t6")
    assert keep_layers(student, 3) == [0, 2, 5] and student.config.num_hidden_layers == 3
    for s_layer, t_index in zip(student.bert.encoder.layer, [0, 2, 5]):
        t_layer = teacher.bert.encoder.layer[t_index]
        assert torch.equal(s_layer.output.dense.weight, t_layer.output.dense.weight)
    assert keep_layers(AutoModelForSequenceClassification.from_pretrained(tmp_path / "t6"), 2) == [0, 5]
    with pytest.raises(CascadeError, match="between 1 and 6"):
        keep_layers(AutoModelForSequenceClassification.from_pretrained(tmp_path / "t6"), 7)


def test_distill_cli_trains_a_smaller_student_from_cached_teacher_scores(scifact_train_slice, tmp_path, capsys):
    teacher = make_cross_encoder(tmp_path / "teacher", layers=4, seed=1)
    out = tmp_path / "student"
    args = ["distill", "--teacher", str(teacher), "--layers", "2", str(scifact_train_slice), "--out", str(out),
            "--max-steps", "30", "--eval-every", "10", "--batch-queries", "4", "--negatives", "3", "--max-length",
            "96", "--lr", "1e-3", "--max-negatives", "6", "--label-weight", "0.2", "--quiet"]
    assert main(args) == 0
    assert "trained 30 steps" in capsys.readouterr().out
    cache = out / "teacher_scores.json"
    saved = json.loads(cache.read_text())
    assert list(saved["teachers"].values()) == [str(teacher)] and len(next(iter(saved["scores"].values()))) > 50
    student = CrossEncoder(str(out))
    assert student.model.config.num_hidden_layers == 2
    assert "Distilled from" in (out / "README.md").read_text()
    assert main([*args[:3], "--layers", "5", *args[5:]]) == 2  # deeper than the teacher: refused before any work
    assert "--layers 5: the teacher" in (err := capsys.readouterr().err) and "has 4 layers" in err

    config = TrainConfig(out=str(out), base=str(teacher), max_negatives=6, max_length=96)
    data = prepare([scifact_train_slice], config, progress=False)
    stamp = cache.stat().st_mtime_ns
    score_with_teachers(data.examples, [str(teacher)], out, max_length=96, progress=False)
    assert cache.stat().st_mtime_ns == stamp  # same pairs, same teacher: the cache is reused
    assert all(len(ex.teacher) == len(set(ex.positives + ex.negatives)) for ex in data.examples)
    assert all(len(ex.negatives) <= 6 for ex in data.examples)


def test_an_ensemble_of_teachers_is_cached_per_teacher_and_averaged_on_the_first_ones_scale(scifact_train_slice,
                                                                                            tmp_path, capsys):
    a, b = (make_cross_encoder(tmp_path / name, layers=2, seed=seed) for name, seed in (("a", 1), ("b", 2)))
    out = tmp_path / "student"
    args = ["distill", "--teacher", str(a), "--teacher", str(b), "--layers", "1", str(scifact_train_slice), "--out",
            str(out), "--max-steps", "4", "--eval-every", "4", "--batch-queries", "4", "--negatives", "3",
            "--max-length", "64", "--max-negatives", "4", "--quiet"]
    assert main(args) == 0
    assert f"mean standardised scores of `{a}` and `{b}`" in (out / "README.md").read_text()
    saved = json.loads((out / "teacher_scores.json").read_text())
    assert sorted(saved["teachers"].values()) == sorted([str(a), str(b)])
    sa, sb = (np.array(saved["scores"][d]) for d in saved["teachers"])  # written in teacher order
    assert not np.allclose(sa, sb)

    data = prepare([scifact_train_slice], TrainConfig(out=str(out), max_negatives=4, max_length=64), progress=False)
    stamp = (out / "teacher_scores.json").stat().st_mtime_ns
    score_with_teachers(data.examples, [str(a), str(b)], out, max_length=64, progress=False)
    got = np.array([s for ex in data.examples for s in ex.teacher.values()])
    want = sa.mean() + sa.std() * ((sa - sa.mean()) / sa.std() + (sb - sb.mean()) / sb.std()) / 2
    assert np.allclose(got, want)
    assert np.allclose(ensemble([sa, 10 * sb + 3]), got)  # each teacher's own scale does not matter
    assert np.allclose(ensemble([sa]), sa)
    score_with_teachers(data.examples, [str(a)], out, max_length=64, progress=False)  # one of them: reused, alone
    assert np.allclose([s for ex in data.examples for s in ex.teacher.values()], sa)
    assert list(json.loads((out / "teacher_scores.json").read_text())["teachers"].values()) == [str(a)]
    assert stamp != (out / "teacher_scores.json").stat().st_mtime_ns
    (out / "teacher_scores.json").write_text(json.dumps({"teacher": str(a), "digest": "x", "scores": [1.0, 2.0]}))
    score_with_teachers(data.examples, [str(a)], out, max_length=64, progress=False)  # an old single-teacher cache
    assert np.allclose([s for ex in data.examples for s in ex.teacher.values()], sa)
    assert list(json.loads((out / "teacher_scores.json").read_text())["teachers"].values()) == [str(a)]
    assert stamp != (out / "teacher_scores.json").stat().st_mtime_ns


def test_distill_loss_falls(scifact_train_slice, tmp_path):
    teacher = make_cross_encoder(tmp_path / "teacher", layers=4, seed=1)
    config = TrainConfig(out=str(tmp_path / "s"), base=str(teacher), teachers=(str(teacher),), layers=2, lr=1e-3,
                         max_steps=40, eval_every=40, negatives=3, batch_queries=4, max_length=96, max_negatives=6)
    data = prepare([scifact_train_slice], config, progress=False)
    score_with_teachers(data.examples, [str(teacher)], config.out, max_length=96, progress=False)
    losses = [h["loss"] for h in Trainer(config, data).run(progress=False).history if "loss" in h]  # not step 0
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_late_interaction_training_loss_falls_and_the_folder_indexes(scifact_train_slice, tmp_path, capsys):
    from cascade.index import Index
    from cascade.rerank.factory import load_reranker
    from cascade.rerank.late_interaction import LateInteraction
    from cascade.train.late import LateTrainer, padded_maxsim

    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    d = torch.tensor([[[0.6, 0.8], [1.0, 0.0], [0.0, 0.0]]])
    assert padded_maxsim(q, torch.tensor([[1.0, 1.0]]), d, torch.tensor([[1, 1, 0]])).item() == pytest.approx(1.8)
    assert padded_maxsim(q, torch.tensor([[1.0, 0.0]]), d, torch.tensor([[1, 1, 0]])).item() == pytest.approx(1.0)

    out = tmp_path / "late-model"
    config = TrainConfig(out=str(out), lr=1e-4, max_steps=24, eval_every=12, negatives=3, batch_queries=4,
                         max_length=64, patience=10, late_dim=32)
    data = prepare([scifact_train_slice], config, progress=False)
    result = LateTrainer(config, data).run(progress=False)
    assert result.history[0]["step"] == 0 and "loss" not in result.history[0]  # the bi-encoder as it came
    losses = [h["loss"] for h in result.history[1:]]
    assert np.mean(losses[-8:]) < np.mean(losses[:8])  # it learns
    assert json.loads((out / "late_interaction.json").read_text())["dim"] == 32
    assert "pipeline_tag: feature-extraction" in (out / "README.md").read_text()

    reloaded = LateInteraction(str(out))
    assert reloaded.encoder.dim == 32
    assert isinstance(load_reranker(str(out)).reranker, LateInteraction)  # --reranker takes the folder too
    scores = reloaded.predict([("vitamin D", "vitamin D and bone density"), ("vitamin D", "galaxy formation")])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "vitamin D and bone density"}\n{"id": "b", "text": "galaxy formation"}\n')
    assert main(["index", str(docs), "--out", str(tmp_path / "idx"), "--quiet", "--late-interaction", str(out)]) == 0
    assert "dim 32" in capsys.readouterr().out
    assert Index.load(tmp_path / "idx").late.dim == 32
