"""Search settings are defined once (cascade/settings.py): every front end takes the same fields and checks."""

import dataclasses

import numpy as np
import pytest

from cascade import CascadeError
from cascade.settings import NAMES, IndexSettings, SearchSettings, SettingError


def test_defaults_and_stage_specs():
    s = SearchSettings()
    assert (s.retrieve, s.rerank_depth, s.top, s.late_depth, s.llm_depth, s.budget_ms) == (150, 30, 8, 0, 0, 200.0)
    staged = SearchSettings.from_stages("hybrid:100,late:40,rerank:20", top=5)
    assert (staged.retrieve, staged.late_depth, staged.rerank_depth, staged.llm_depth, staged.top) == (100, 40, 20, 0, 5)
    assert SearchSettings.from_stages("hybrid:50").rerank_depth == 0  # a stage left out does not run
    with pytest.raises(CascadeError, match="follow the order"):
        SearchSettings.from_stages("hybrid:50,rerank:5,late:10")


@pytest.mark.parametrize("changes, field, words", [
    ({"retrieve": 0}, "retrieve", "retrieve must be an integer between 1 and 10000, got 0"),
    ({"top": 2.5}, "top", "top must be an integer"),
    ({"rerank_depth": True}, "rerank_depth", "rerank_depth must be an integer"),
    ({"fusion": "max"}, "fusion", "unknown fusion 'max'"),
    ({"alpha": 1.5}, "alpha", "alpha must be a finite number between 0 and 1"),
    ({"budget_ms": float("nan")}, "budget_ms", "or none (no limit)"),
    ({"retrieve": 10, "late_depth": 20}, "retrieve", "retrieve (10) must be >= late_depth (20)"),
    ({"retrieve": 10, "rerank_depth": 20}, "retrieve", "retrieve (10) must be >= rerank_depth (20)"),
    ({"late_depth": 5, "rerank_depth": 6}, "rerank_depth", "rerank_depth (6) must be <= late_depth (5)"),
    ({"colour": "red"}, "colour", "unknown search setting 'colour'"),
])
def test_a_bad_setting_is_refused_naming_its_field(changes, field, words):
    with pytest.raises(SettingError) as caught:
        SearchSettings().replace(**changes)
    assert caught.value.field == field and words in str(caught.value)


def test_errors_speak_each_front_end_s_names_and_values_come_out_plain():
    with pytest.raises(SettingError) as caught:
        SearchSettings(retrieve=10, rerank_depth=20)
    assert caught.value.render(lambda n: "--" + n.replace("_", "-")).startswith(
        "--retrieve (10) must be >= --rerank-depth (20)")
    s = SearchSettings(retrieve=np.int64(40), blend=1, budget_ms=None)
    assert type(s.retrieve) is int and type(s.blend) is float and s.budget_ms is None
    assert s.to_dict() == {f.name: getattr(s, f.name) for f in dataclasses.fields(s)} and tuple(s.to_dict()) == NAMES


def test_every_setting_is_a_flag_with_its_default(capsys):
    from cascade.cli import main

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in NAMES:
        assert "--" + name.replace("_", "-") in help_text
    assert "first-stage candidates" in help_text and "(default 150)" in help_text


def test_the_cli_names_the_flag_of_a_bad_setting(small_index, capsys):
    from cascade.cli import main

    assert main(["search", str(small_index), "q", "--top", "0", "--no-rerank"]) == 2
    assert "--top must be an integer between 1 and 1000, got 0" in capsys.readouterr().err
    assert main(["search", str(small_index), "q", "--fusion", "weighted", "--alpha", "2", "--no-rerank"]) == 2
    assert "--alpha must be a finite number between 0 and 1, got 2.0" in capsys.readouterr().err


def test_every_registered_stage_has_its_depth_setting_in_order():
    """Adding a stage is one file, one registry entry and one setting: the settings' stage list is the registry's."""
    from cascade.settings import STAGE_DEPTHS, STAGE_ORDER
    from cascade.stages import STAGES

    assert STAGE_ORDER == ("hybrid", *STAGES)
    assert STAGE_DEPTHS == {"hybrid": "retrieve", **{name: stage.depth for name, stage in STAGES.items()}}


def test_light_imports_load_no_model_code():
    """`cascade --help`/`--version`, settings and the package face load neither torch nor transformers."""
    import subprocess
    import sys

    code = ("import sys, cascade, cascade.rerank, cascade.settings, cascade.cli.parser, cascade.evaluate.chains, "
            "cascade.machine; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules)); print(cascade.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == __import__("cascade").__version__
    version = subprocess.run([sys.executable, "-m", "cascade.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("cascade ")


def test_pair_tokens_follow_the_passage_length():
    """1.6 tokens per passage word, rounded up to 32; whole documents leave the reranker its own window."""
    assert [IndexSettings(passage_words=w, overlap=0).pair_tokens for w in (80, 120, 200, 1, 0)] == \
        [128, 192, 320, 32, None]
    assert IndexSettings().pair_tokens == 128


def test_index_settings_keep_the_existing_index_and_refuse_by_flag(tmp_path, capsys):
    from cascade.cli import main
    from tests.conftest import DOCS, write_jsonl

    assert IndexSettings.merged({"overlap": 20, "shards": None}, {"passage_words": 120, "shards": 2}) == \
        IndexSettings(passage_words=120, overlap=20, shards=2)
    with pytest.raises(SettingError, match="unknown index setting 'words'"):
        IndexSettings.merged({"words": 3})
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    for flags, message in ((["--overlap", "300"], "--overlap (300) must be smaller than --passage-words (80)"),
                           (["--shards", "0"], "--shards must be an integer between 1 and 4096, got 0")):
        assert main(["index", str(src), "--out", str(tmp_path / "idx"), "--quiet", *flags]) == 2
        assert capsys.readouterr().err.strip() == f"cascade: error: {message}"
    assert not (tmp_path / "idx").exists()
