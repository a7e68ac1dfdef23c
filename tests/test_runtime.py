"""Precision and padding are decided per model and per item, never per batch (batch-invariant results)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cascade import CascadeError, CrossEncoder
from cascade.models.bi_encoder import Encoder
from cascade.models.runtime import MIN_REDUCED_TOKENS, PAD_MULTIPLE, autocast_dtype, padded_groups, padded_length, tolerance

CPU = torch.device("cpu")


def test_padded_length_rounds_up_to_the_multiple_and_stops_at_the_limit():
    assert [padded_length(n) for n in (1, PAD_MULTIPLE, PAD_MULTIPLE + 1)] == [PAD_MULTIPLE, PAD_MULTIPLE,
                                                                              2 * PAD_MULTIPLE]
    assert padded_length(250, limit=250) == 250


def test_an_item_is_padded_to_its_own_length_whoever_shares_its_batch(tiny_ce):
    tokenizer = CrossEncoder(str(tiny_ce), precision="fp32", warm_up=False).tokenizer
    enc = tokenizer(["short", "a much longer text " * 12, "tiny"])
    alone = dict((tuple(pos), f["input_ids"].shape) for pos, f in padded_groups(tokenizer, enc, [0], CPU))
    mixed = list(padded_groups(tokenizer, enc, [1, 0, 2], CPU))
    assert alone == {(0,): (1, PAD_MULTIPLE)}
    assert [(p.tolist(), f["input_ids"].shape[1]) for p, f in mixed] == [([0], 64), ([1, 2], PAD_MULTIPLE)]
    # in bf16 a small call is topped up with copies of its first row; fp32 needs none
    [(positions, features)] = padded_groups(tokenizer, enc, [0], CPU, dtype=torch.bfloat16)
    assert positions.tolist() == [0] and features["input_ids"].shape == (MIN_REDUCED_TOKENS // PAD_MULTIPLE,
                                                                           PAD_MULTIPLE)
    assert (features["input_ids"] == features["input_ids"][0]).all()


def test_cascade_precision_sets_what_auto_means(monkeypatch):
    monkeypatch.setenv("CASCADE_PRECISION", "fp32")
    assert autocast_dtype(CPU, "auto") is None
    assert autocast_dtype(CPU, "bf16") == torch.bfloat16  # an explicit choice wins
    monkeypatch.setenv("CASCADE_PRECISION", "bf16")
    assert autocast_dtype(CPU, "auto") == torch.bfloat16
    monkeypatch.setenv("CASCADE_PRECISION", "half")
    with pytest.raises(CascadeError, match="CASCADE_PRECISION='half' is not a precision"):
        autocast_dtype(CPU, "auto")


def test_a_bf16_cross_encoder_holds_bf16_weights_and_a_fp32_scoring_head(tiny_ce):
    ce = CrossEncoder(str(tiny_ce), precision="bf16", warm_up=False)
    assert ce.model.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16
    assert ce.model.classifier.weight.dtype == torch.float32
    assert ce.model.bert.pooler.dense.weight.dtype == torch.float32
    scores = ce.predict([("q", "a passage"), ("q", "another passage")], raw_scores=True)
    # bf16 logits fall on a grid of 2^-8 relative steps; fp32 ones need not
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    encoder = Encoder(precision="bf16")  # fp32 weights: passages under bf16 autocast, queries in fp32
    assert encoder.dtype == torch.bfloat16 and next(encoder.model.parameters()).dtype == torch.float32


def test_the_bi_encoder_gives_a_passage_the_same_vector_in_any_batch():
    encoder = Encoder()
    texts = ["The Moon raises tides.", "Rate limiting sheds load " * 20, "Caches avoid round trips " * 9,
             "Vitamin D comes from sunlight."]
    batched = encoder.encode(texts, batch_size=16)
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    reversed_ = encoder.encode(texts[::-1], batch_size=3)[::-1]
    for other in (alone, reversed_):  # cosine with the batched vector of the same text
        np.testing.assert_allclose((other * batched).sum(1), 1.0, atol=tolerance(encoder.dtype))
    query = encoder.encode_query("what raises tides?")
    np.testing.assert_allclose(query, encoder.encode_query("what raises tides?"))
    assert abs(float(query @ encoder.encode(["what raises tides?"])[0]) - 1) <= tolerance(encoder.dtype)


def test_info_reports_the_machine_and_the_precision_chosen_from_it(capsys, monkeypatch):
    from cascade.cli import main
    from cascade.machine import FLAGS
    from cascade.models.runtime import cpu_has_fast_bf16
    from cascade.models.verdicts import precision_verdict

    monkeypatch.delenv("CASCADE_PRECISION", raising=False)
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    bf16 = cpu_has_fast_bf16() and precision_verdict().choice == "bf16"
    assert set(report["machine"]["flags"]) <= set(FLAGS) and report["machine"]["cores"] >= 1
    assert report["machine"]["torch"] == torch.__version__ and report["machine"]["python"]
    assert report["compute"]["precision"] == ("bf16" if bf16 else "fp32")
    assert report["compute"]["threads"] == torch.get_num_threads()
    assert all(Path(path, "config.json").is_file() for path in report["models"].values())  # all installed here
    monkeypatch.setenv("CASCADE_PRECISION", "fp32")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "cpu, fp32" in out and "CASCADE_PRECISION=fp32" in out and "speed flags:" in out


def test_an_isa_cap_makes_cascade_choose_as_the_lesser_cpu_would(capsys, monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN off AMX and AVX512: flags above the cap are hidden and bf16,
    which would then run without its units, is not chosen."""
    from cascade.cli import main
    from cascade.machine import cpu_flags
    from cascade.models.runtime import autocast_dtype, cpu_has_fast_bf16

    monkeypatch.delenv("CASCADE_PRECISION", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert set(cpu_flags()) <= {"avx2"} and not cpu_has_fast_bf16()
    assert autocast_dtype(torch.device("cpu")) is None
    assert main(["info"]) == 0
    assert "capped at AVX2 by ONEDNN_MAX_CPU_ISA" in capsys.readouterr().out
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert "amx_bf16" not in cpu_flags() and set(cpu_flags()) <= {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
