"""Cross-encoder backends: eager torch or traced and fused by oneDNN Graph, chosen once per machine by measuring."""

import json

import numpy as np
import pytest
import torch

from cascade import CascadeError, CrossEncoder
from cascade.models import backends, runtime, verdicts
from cascade.models.runtime import tolerance
from tests.conftest import DOCS

PAIRS = [(q, f"{d['title']}. {d['text']}") for q in ("what raises tides?", "does rate limiting add latency?")
         for d in DOCS]


def test_backend_names_are_checked(tiny_ce, monkeypatch):
    with pytest.raises(CascadeError, match="unknown backend 'onnx'"):
        CrossEncoder(str(tiny_ce), backend="onnx", warm_up=False)
    monkeypatch.setenv("CASCADE_BACKEND", "fast")
    with pytest.raises(CascadeError, match="CASCADE_BACKEND='fast' is not a backend"):
        CrossEncoder(str(tiny_ce), warm_up=False)
    monkeypatch.setenv("CASCADE_BACKEND", "torch")  # forces what "auto" means; an explicit choice still wins
    assert CrossEncoder(str(tiny_ce), warm_up=False).backend == "torch"
    assert CrossEncoder(str(tiny_ce), backend="fused", warm_up=False).backend == "fused"


def test_fused_scores_rank_as_eager_ones_and_do_not_depend_on_what_ran_before():
    eager = CrossEncoder("cascade-reranker", backend="torch", warm_up=False)
    fused = CrossEncoder("cascade-reranker", backend="fused", warm_up=False)
    assert fused.signature == eager.signature + "+fused"  # never served from each other's cache entries
    first = fused.predict(PAIRS, raw_scores=True, batch_size=5)  # every shape is new here
    again = fused.predict(PAIRS, raw_scores=True, batch_size=5)
    np.testing.assert_array_equal(first, again)
    alone = np.array([fused.predict([p], raw_scores=True)[0] for p in PAIRS[:3]])
    np.testing.assert_allclose(alone, first[:3], atol=4 * tolerance(fused.dtype))
    plain = eager.predict(PAIRS, raw_scores=True)
    np.testing.assert_allclose(first, plain, atol=0.25)  # bf16 rounding in another order; 1e-4 in fp32
    for q in range(2):  # the same best passage per query, and the same order of the rest
        block = slice(q * len(DOCS), (q + 1) * len(DOCS))
        assert np.argmax(first[block]) == np.argmax(plain[block])
    assert backends._spearman(first, plain) > backends.MIN_AGREEMENT


def test_a_fused_call_holds_at_most_max_tokens_a_graph_so_long_pairs_do_not_keep_big_graphs(tiny_ce):
    import torch

    fused = CrossEncoder(str(tiny_ce), backend="fused", precision="fp32", warm_up=False)
    for length in (128, 512):
        x = {k: torch.ones(40, length, dtype=torch.long) for k in ("input_ids", "token_type_ids", "attention_mask")}
        x["input_ids"] = torch.randint(1000, 5000, (40, length), generator=torch.Generator().manual_seed(length))
        out = fused.forward(x)
        assert len(out) == 40
        flipped = fused.forward({k: v.flip(0) for k, v in x.items()}).flip(0)
        np.testing.assert_allclose(out, flipped, atol=1e-4)  # which chunk a row lands in changes nothing
    assert fused.forward.seen == {(32, 128), (8, 128), (8, 512)}  # 40 rows: 32 + 8 at 128 tokens, 5 x 8 at 512
    assert all(rows * length <= backends.MAX_TOKENS for rows, length in fused.forward.seen)


def test_auto_measures_once_per_machine_and_model_and_keeps_the_verdict(tiny_ce, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CASCADE_BACKEND", raising=False)
    ce = CrossEncoder(str(tiny_ce), warm_up=False)
    key = verdicts.machine_key(ce._signature)
    stored = json.loads((tmp_path / "cascade" / "backends.json").read_text())
    assert stored[key]["choice"] == ce.backend == ce.verdict.choice
    assert stored[key]["speedup"] > 0 and -1 <= stored[key]["agreement"] <= 1 and stored[key]["why"]
    # the next load reads the verdict instead of measuring again
    stored[key] = {"choice": "torch", "speedup": 0.5, "agreement": 1.0, "why": "slower here",
                   "tried": list(backends.tried(ce.model))}
    (tmp_path / "cascade" / "backends.json").write_text(json.dumps(stored))
    again = CrossEncoder(str(tiny_ce), warm_up=False)
    assert again.backend == "torch" and again.verdict.why == "slower here"
    from cascade.cli import main

    assert main(["info"]) == 0
    assert f"cross-encoder backend for {ce._signature}: torch (slower here)" in capsys.readouterr().out
    (tmp_path / "cascade" / "backends.json").write_text("{not json")  # a broken cache is measured afresh
    assert CrossEncoder(str(tiny_ce), warm_up=False).verdict.why != "slower here"


def test_a_model_retrained_into_the_same_folder_is_a_new_model_to_caches_and_verdicts(tmp_path, monkeypatch):
    from tests.conftest import make_cross_encoder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CASCADE_BACKEND", raising=False)
    folder = make_cross_encoder(tmp_path / "model", seed=0)
    first, same = CrossEncoder(str(folder), warm_up=False), CrossEncoder(str(folder), warm_up=False)
    assert first.signature == same.signature and f"{folder}#" in first.signature
    make_cross_encoder(folder, seed=1)  # retrained in place: same id, other weights
    again = CrossEncoder(str(folder), warm_up=False)
    assert again.signature.split("@")[0] != first.signature.split("@")[0]
    assert not np.allclose(first.predict(PAIRS[:3], raw_scores=True), again.predict(PAIRS[:3], raw_scores=True))
    stored = json.loads((tmp_path / "cache" / "cascade" / "backends.json").read_text())
    models = [key for key in stored if not key.endswith(f": {verdicts.PRECISION}")]
    assert len(models) == 2  # the new weights were measured, not judged by the old ones' verdict


def test_the_bi_encoder_encodes_passages_fused_as_eager_does_and_queries_always_eager():
    from cascade.models.bi_encoder import Encoder

    fused, eager = Encoder(backend="fused"), Encoder(backend="torch")
    texts = [t for _, t in PAIRS[: len(DOCS)]] + ["Rate limiting sheds load " * 40]
    a, b = fused.encode(texts, batch_size=3), eager.encode(texts)
    assert fused.backend == "fused" and eager.backend == "torch"
    assert (a * b).sum(1).min() > 0.999
    np.testing.assert_array_equal(a, fused.encode(texts[::-1], batch_size=16)[::-1])  # batching changes nothing
    np.testing.assert_array_equal(fused.encode_query("what raises tides?"), eager.encode_query("what raises tides?"))


def test_the_cli_backend_flag_sets_what_auto_means_for_the_command(monkeypatch, capsys):
    from cascade.cli import main
    from cascade.cli.options import BACKENDS
    from cascade.cli.parser import build_parser

    assert BACKENDS == backends.BACKENDS
    monkeypatch.setenv("CASCADE_BACKEND", "auto")  # restored after the test, whatever the command sets
    assert main(["demo", "--backend", "torch", "--no-rerank"]) == 0
    assert backends.requested("auto") == "torch"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--backend", "onnx"])
    assert "invalid choice: 'onnx'" in capsys.readouterr().err


def test_auto_precision_follows_a_verdict_measured_once_per_machine(tmp_path, monkeypatch, capsys):
    """bf16 units do not make bf16 pay by themselves (without AMX it ran slower than fp32), so where the CPU
    has them, "auto" times bf16 against fp32 once and keeps the answer; `cascade info --remeasure` forgets it."""
    import torch

    from cascade.cli import main
    from cascade.models.runtime import autocast_dtype, cpu_has_fast_bf16

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CASCADE_PRECISION", raising=False)
    cache, key = tmp_path / "cascade" / "backends.json", verdicts.machine_key(verdicts.PRECISION)
    verdict = verdicts.precision_verdict()  # measured on any CPU when asked
    stored = json.loads(cache.read_text())[key]
    assert stored["choice"] == verdict.choice in ("bf16", "fp32") and stored["speedup"] > 0
    assert "MiniLM-sized layer" in stored["why"]
    for choice in ("fp32", "bf16"):  # what auto means follows the stored verdict, not the flags alone
        cache.write_text(json.dumps({key: {"choice": choice, "speedup": 1.0, "why": f"{choice} stored"}}))
        want = torch.bfloat16 if choice == "bf16" and cpu_has_fast_bf16() else None
        assert autocast_dtype(torch.device("cpu")) == want
        assert CrossEncoder("cascade-reranker", backend="torch", warm_up=False).dtype == want
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert ("bf16 stored" in out) == cpu_has_fast_bf16()
    monkeypatch.setenv("CASCADE_PRECISION", "fp32")  # forced: nothing measured, the verdict stays unused
    assert autocast_dtype(torch.device("cpu")) is None
    monkeypatch.delenv("CASCADE_PRECISION")
    assert main(["info", "--remeasure", "--json"]) == 0
    captured = capsys.readouterr()
    assert "forgot 1 measured verdict" in captured.err and json.loads(captured.out)["compute"]
    assert json.loads(cache.read_text()).get(key, {}).get("why") != "bf16 stored"  # gone, or measured anew


def _exports(cache) -> list:
    return sorted(p for p in (cache / "cascade" / "openvino").iterdir() if not p.name.startswith("."))


def test_openvino_int8_ranks_as_fp32_eager_does_scores_a_pair_alone_as_batched_and_exports_once(tmp_path, monkeypatch):
    """The bundled student quantised to int8 (calibrated on the demo's pairs): the ranking survives, a pair's
    score does not depend on its batch mates, and the export is written once, whole, readable by others, and
    then loaded without calibrating again."""
    from cascade.fileio import FILE_MODE

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    int8 = CrossEncoder("cascade-reranker-fast", backend="openvino", warm_up=False)
    eager = CrossEncoder("cascade-reranker-fast", backend="torch", precision="fp32", warm_up=False)
    assert int8.dtype is None and int8.signature == eager.signature + "+openvino"  # from the fp32 weights
    got, want = int8.predict(PAIRS, raw_scores=True, batch_size=4), eager.predict(PAIRS, raw_scores=True)
    assert backends._spearman(got, want) > backends.MIN_AGREEMENT
    for q in range(2):
        block = slice(q * len(DOCS), (q + 1) * len(DOCS))
        assert np.argmax(got[block]) == np.argmax(want[block])
    alone = np.array([int8.predict([p], raw_scores=True)[0] for p in PAIRS[:3]])
    np.testing.assert_allclose(alone, got[:3], atol=tolerance(None))
    [export] = _exports(tmp_path)
    assert {f.name for f in export.iterdir()} == {"model.xml", "model.bin"}
    assert all(f.stat().st_mode & 0o777 == FILE_MODE for f in export.iterdir())
    written = (export / "model.bin").stat().st_mtime_ns
    monkeypatch.setattr(backends, "probe_pairs", None)  # a cached export is loaded without calibration text
    again = CrossEncoder("cascade-reranker-fast", backend="openvino", warm_up=False)
    assert (export / "model.bin").stat().st_mtime_ns == written and _exports(tmp_path) == [export]
    np.testing.assert_array_equal(again.predict(PAIRS, raw_scores=True, batch_size=4), got)


def test_the_bi_encoder_encodes_passages_in_int8_close_to_fp32_and_queries_in_fp32(tmp_path, monkeypatch):
    from cascade.models.bi_encoder import Encoder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    int8, eager = Encoder(backend="openvino"), Encoder(backend="torch", precision="fp32")
    texts = [t for _, t in PAIRS[: len(DOCS)]] + ["Rate limiting sheds load " * 40]
    a, b = int8.encode(texts, batch_size=3), eager.encode(texts)
    assert int8.backend == "openvino" and (a * b).sum(1).min() > 0.97  # 0.997-0.998, the repeated text 0.98
    queries = np.stack([eager.encode_query(q) for q in ("what raises tides?", "does rate limiting add latency?",
                                                         "how do bones get calcium?")])
    np.testing.assert_array_equal((queries @ a.T).argmax(1), (queries @ b.T).argmax(1))  # the same nearest passage
    np.testing.assert_allclose(a, int8.encode(texts[::-1], batch_size=16)[::-1], atol=tolerance(None))
    np.testing.assert_array_equal(int8.encode_query("what raises tides?"), eager.encode_query("what raises tides?"))


def bf16_does_not_pay_here() -> None:
    """Store this machine's precision verdict as fp32, as `auto` finds it on a CPU without AMX (on one without bf16
    units it is fp32 unmeasured anyway): the case where "auto" also times int8."""
    verdicts.remember(verdicts.machine_key(verdicts.PRECISION), verdicts.Verdict("fp32", why="bf16 did not pay"))


def test_auto_times_int8_where_bf16_did_not_pay_and_says_what_it_measured(tiny_ce, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CASCADE_BACKEND", raising=False)
    monkeypatch.delenv("CASCADE_PRECISION", raising=False)
    bf16_does_not_pay_here()
    ce = CrossEncoder(str(tiny_ce), warm_up=False)
    assert ce.dtype is None and backends.tried(ce.model, ce.precision) == ("fused", "openvino")
    assert "fused" in ce.verdict.why and "openvino" in ce.verdict.why and ce.backend == ce.verdict.choice
    path = tmp_path / "cascade" / "backends.json"
    stored = json.loads(path.read_text())
    key = verdicts.machine_key(ce._signature)
    assert stored[key]["tried"] == ["fused", "openvino"]
    # a verdict measured before OpenVINO was installed (fused only) is measured again
    stored[key] = {"choice": "torch", "why": "fused only", "tried": ["fused"]}
    path.write_text(json.dumps(stored))
    assert CrossEncoder(str(tiny_ce), warm_up=False).verdict.tried == ("fused", "openvino")
    # a precision asked for by name (fp32 for bit-stable runs) keeps int8 out
    for precision in ("fp32", "bf16"):
        chosen = CrossEncoder(str(tiny_ce), precision=precision, backend="torch", warm_up=False)
        assert backends.tried(chosen.model, chosen.precision) == ("fused",)


def test_auto_times_int8_beside_bf16_without_amx_and_not_with_it(tiny_ce, tmp_path, monkeypatch):
    """A real Zen 4 ran int8 1.6-1.9x fused bf16; AMX runs bf16 as fast as int8, so there the export is skipped."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CASCADE_PRECISION", raising=False)
    verdicts.remember(verdicts.machine_key(verdicts.PRECISION), verdicts.Verdict("bf16", why="bf16 paid"))
    bf16 = CrossEncoder(str(tiny_ce), backend="torch", warm_up=False).model
    assert next(bf16.parameters()).dtype == torch.bfloat16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # hides AMX, as on a Zen 4
    assert not runtime.cpu_has_amx() and backends.tried(bf16) == ("fused", "openvino")
    monkeypatch.setattr(backends, "cpu_has_amx", lambda: True)  # as on an AMX CPU
    assert backends.tried(bf16) == ("fused",)


def test_without_the_extra_openvino_is_refused_by_name_and_auto_does_not_try_it(tiny_ce, tmp_path, monkeypatch):
    from cascade.models import openvino_int8

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CASCADE_PRECISION", raising=False)
    bf16_does_not_pay_here()
    ce = CrossEncoder(str(tiny_ce), backend="torch", warm_up=False)
    assert backends.tried(ce.model, ce.precision) == ("fused", "openvino")
    monkeypatch.setattr(openvino_int8, "installed", lambda: False)  # as on a machine without the extra
    with pytest.raises(CascadeError, match=r"pip install 'cascade-retrieval\[openvino\]'"):
        CrossEncoder(str(tiny_ce), backend="openvino", warm_up=False)
    assert backends.tried(ce.model, ce.precision) == ("fused",)
