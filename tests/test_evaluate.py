import json

import numpy as np
import pytest

from cascade import CascadeError, Passage
from cascade.cli import main
from cascade.evaluate.beir import load_split
from cascade.evaluate.chains import parse_stages
from cascade.evaluate.diagnostics import diagnose
from cascade.evaluate.runner import EvalResult, StageResult, doc_run, final_ranking
from cascade.evaluate.sweep import parse_depths, suggest
from cascade.results import StageRuns
from tests.conftest import beir_slice

N_QUERIES = 25


@pytest.fixture(scope="module")
def scifact_mini(scifact, tmp_path_factory):
    """A BEIR folder: SciFact's first 25 test queries, their abstracts, and 300 distractors."""
    return beir_slice(scifact, tmp_path_factory.mktemp("scifact-mini"), "test", N_QUERIES, 300)


def test_load_split_errors_name_the_problem(scifact, tmp_path):
    with pytest.raises(CascadeError, match=r"no qrels/dev.tsv \(splits available: test, train\)"):
        load_split(scifact, "dev")
    with pytest.raises(CascadeError, match="dataset not found"):
        load_split(tmp_path / "nope", "test")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("q\td\ts\n1\t2\t1\n")
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "q"}\n')
    with pytest.raises(CascadeError, match="expected the header"):
        load_split(tmp_path, "test")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t2\thigh\n")
    with pytest.raises(CascadeError, match="'high' is not an integer"):
        load_split(tmp_path, "test")
    split = load_split(scifact, "test")
    assert len(split.queries) == 300 and sum(len(v) for v in split.qrels.values()) == 339  # official counts


def test_doc_run_takes_the_best_passage_per_document():
    passages = [Passage("a#0", "a", "x"), Passage("b", "b", "y"), Passage("a#1", "a", "z"), Passage("c", "c", "w")]
    run = doc_run(passages, np.array([2, 1, 0, 3]), np.array([9.0, 5.0, 4.0, 1.0]), depth=2)
    assert run == {"a": 9.0, "b": 5.0}


def test_final_ranking_keeps_scores_non_increasing():
    runs = StageRuns(bm25=None, dense=None, fusion=None, heads={"rerank": (np.array([7, 3]), np.array([2.5, -1.0]))},
                     order=np.array([7, 3, 1, 4]), timings_ms={})
    ids, scores = final_ranking(runs)
    assert ids.tolist() == [7, 3, 1, 4]
    assert np.all(np.diff(scores) < 0) and scores[:2].tolist() == [2.5, -1.0]


def test_parse_stages_and_depths():
    assert parse_stages("hybrid+rerank, bm25") == ["bm25", "hybrid+rerank"]
    assert parse_stages("hybrid+late+rerank,hybrid+rerank+llm,hybrid+late,dense,hybrid") == [
        "dense", "hybrid", "hybrid+late", "hybrid+late+rerank", "hybrid+rerank+llm"]
    for bad in ("bm25,splade", "hybrid+rerank+late", "hybrid+late+late", "bm25+rerank", "hybrid+"):
        with pytest.raises(CascadeError, match="unknown stage"):
            parse_stages(bad)
    assert parse_depths("30,10,30") == [10, 30]
    with pytest.raises(CascadeError):
        parse_depths("10,x")


def test_suggest_picks_the_smallest_depth_within_tolerance():
    rows = [{"depth": 10, "ndcg@10": 0.60}, {"depth": 30, "ndcg@10": 0.696}, {"depth": 100, "ndcg@10": 0.70}]
    assert suggest(rows) == (100, 30)
    assert suggest(rows, tolerance=0.0) == (100, 100)


def fake_result(hybrid: dict, rerank: dict | None, per_query=None) -> EvalResult:
    def stage(metrics, pq):
        return StageResult(metrics=metrics, per_query={"ndcg@10": pq}, latency_ms={"p50": 1, "p95": 2}, run={})

    before, after = per_query or ({"1": 0.5}, {"1": 0.5})
    stages = {"hybrid": stage(hybrid, before)}
    if rerank:
        stages["hybrid+rerank"] = stage(rerank, after)
    return EvalResult("d", "dev", 1, {"retrieve": 150, "rerank_depth": 30}, stages, {})


def metrics(ndcg, pool=0.95, depth_recall=0.9, p5=0.3):
    return {"ndcg@10": ndcg, "p@5": p5, "recall@150": pool, "recall@30": depth_recall}


QRELS = {"1": {"a": 1, "b": 0}}


def test_diagnostics_name_the_likely_cause():
    weak = diagnose(fake_result(metrics(0.5, pool=0.6, depth_recall=0.5), metrics(0.505)), QRELS)
    assert any("polishing bad candidates" in n for n in weak)
    assert any("weak candidate pool" in n for n in weak)
    mismatch = diagnose(fake_result(metrics(0.5), metrics(0.48), ({"1": 0.6}, {"1": 0.4})), QRELS)
    assert any("domain mismatch" in n for n in mismatch) and any("hurt 1" in n for n in mismatch)
    assert any(n.startswith("Reranking made nDCG@10 worse") for n in mismatch)
    small = diagnose(fake_result(metrics(0.5), metrics(0.51), ({"1": 0.5}, {"1": 0.51})), QRELS)
    assert any("model too small" in n for n in small) and any("helped 1" in n for n in small)
    good = diagnose(fake_result(metrics(0.5, p5=0.7), metrics(0.6)), QRELS)
    assert not any("points to" in n for n in good)
    assert any("at or over the 60% rule" in n for n in good)
    assert any("P@5 cannot exceed 0.200" in n for n in good)  # one relevant doc per query


def test_eval_end_to_end_on_scifact(scifact_mini, tiny_ce, tmp_path, capsys):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    args = ["eval", str(scifact_mini), "--split", "test", "--index", str(tmp_path / "idx"), "--quiet",
            "--reranker", str(tiny_ce), "--retrieve", "50", "--rerank-depth", "20",
            "--json-out", str(tmp_path / "out.json"), "--run-dir", str(tmp_path / "runs"),
            "--report", str(tmp_path / "report.md")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| stage | nDCG@10 | MRR@10 | R@100 | R@20 | R@50 | P@5 | p50 ms | p95 ms |" in printed
    for stage in ("bm25", "dense", "hybrid", "hybrid+rerank"):
        assert f"| {stage} |" in printed
    assert "Candidate pool: hybrid Recall@50" in printed and "Reranking changed nDCG@10" in printed

    out = json.loads((tmp_path / "out.json").read_text())
    assert out["dataset"].startswith("scifact-mini") and (out["split"], out["queries"]) == ("test", N_QUERIES)
    for name, stage in out["stages"].items():
        assert {"ndcg@10", "mrr@10", "recall@100", "p@5", "latency_ms"} <= set(stage)
        assert stage["latency_ms"]["p50"] <= stage["latency_ms"]["p95"]
    assert out["stages"]["bm25"]["delta"] is None
    assert out["stages"]["dense"]["delta"]["ndcg@10"] == pytest.approx(
        out["stages"]["dense"]["ndcg@10"] - out["stages"]["bm25"]["ndcg@10"], abs=1e-5)
    assert out["diagnostics"]

    # --json: the same object on stdout, nothing else there
    assert main([*args[:11], "--stages", "bm25,hybrid", "--json", "--json-out", str(tmp_path / "again.json")]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "again.json").read_text())

    # the run files are valid TREC runs, and trec_eval's reading of them gives our numbers
    qrels = load_split(scifact_mini, "test").qrels
    for name in out["stages"]:
        lines = (tmp_path / "runs" / f"{name}.run").read_text().splitlines()
        run: dict[str, dict[str, float]] = {}
        for line in lines:
            qid, q0, doc, rank, score, tag = line.split()
            assert q0 == "Q0" and tag == f"cascade-{name}"
            run.setdefault(qid, {})[doc] = float(score)
            assert int(rank) == len(run[qid])
        assert len(run) == N_QUERIES and max(len(d) for d in run.values()) <= 1000
        ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "P.5"}).evaluate(run)
        for ours, theirs in (("ndcg@10", "ndcg_cut_10"), ("recall@100", "recall_100"), ("p@5", "P_5")):
            expected = sum(v[theirs] for v in ref.values()) / N_QUERIES
            assert out["stages"][name][ours] == pytest.approx(expected, abs=1e-5), (name, ours)

    report = (tmp_path / "report.md").read_text()
    assert "## Results by stage" in report and "## Diagnostics" in report and "![plot](report.png)" in report
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_html_report_is_self_contained(scifact_mini, tmp_path):
    args = ["eval", str(scifact_mini), "--index", str(tmp_path / "idx"), "--quiet", "--no-rerank",
            "--queries", "5", "--report", str(tmp_path / "r.html")]
    assert main(args) == 0
    page = (tmp_path / "r.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page and "hybrid+rerank" not in page


def test_eval_errors(scifact_mini, tmp_path, capsys):
    assert main(["eval", str(scifact_mini), "--split", "dev", "--quiet"]) == 2
    assert "no qrels/dev.tsv" in capsys.readouterr().err
    assert main(["eval", str(scifact_mini), "--stages", "hybrid+rerank", "--no-rerank", "--quiet"]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert main(["eval", str(scifact_mini), "--stages", "bogus"]) == 2
    assert "unknown stage" in capsys.readouterr().err


def test_sweep_writes_table_json_plot(scifact_mini, tiny_ce, tmp_path, capsys):
    args = ["sweep", str(scifact_mini), "--split", "test", "--index", str(tmp_path / "idx"), "--quiet",
            "--reranker", str(tiny_ce), "--depths", "5,10,20", "--retrieve", "20", "--queries", "10",
            "--latency-queries", "3", "--out", str(tmp_path / "sw")]
    assert main(args) == 0
    assert "Suggested rerank depth:" in capsys.readouterr().out
    data = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [r["depth"] for r in data["depths"]] == [5, 10, 20]
    assert data["suggested_depth"] in (5, 10, 20) and data["queries"] == 10
    assert all(r["latency_ms"]["p50"] > 0 for r in data["depths"])
    assert (tmp_path / "sw" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "← suggested" in (tmp_path / "sw" / "sweep.md").read_text()
    assert main([*args[:-2], "--depths", "10,500"]) == 2
    assert "exceeds --retrieve" in capsys.readouterr().err


def test_eval_and_sweep_with_a_late_interaction_stage(scifact_mini, tiny_ce, tmp_path, capsys):
    idx = str(tmp_path / "idx")
    args = ["eval", str(scifact_mini), "--index", idx, "--quiet", "--reranker", str(tiny_ce), "--queries", "6",
            "--stages", "hybrid,hybrid+late,hybrid+late+rerank", "--late-depth", "40", "--rerank-depth", "10",
            "--json-out", str(tmp_path / "out.json")]
    assert main(args) == 0  # builds the token vectors the late stage needs
    out = json.loads((tmp_path / "out.json").read_text())
    assert list(out["stages"]) == ["hybrid", "hybrid+late", "hybrid+late+rerank"]
    late, both = out["stages"]["hybrid+late"], out["stages"]["hybrid+late+rerank"]
    assert late["latency_ms"]["late_p50"] > 0 and "rerank_p50" not in late["latency_ms"]
    assert both["latency_ms"]["rerank_p50"] > 0 and both["latency_ms"]["p50"] > late["latency_ms"]["p50"] - 5
    assert out["settings"]["late_depth"] == 40 and 0 <= late["ndcg@10"] <= 1
    assert late["recall@100"] == pytest.approx(out["stages"]["hybrid"]["recall@100"])  # it only reorders the top 40

    capsys.readouterr()
    args = ["sweep", str(scifact_mini), "--split", "test", "--index", idx, "--quiet", "--reranker", str(tiny_ce),
            "--depths", "5,10", "--late-depth", "20", "--queries", "4", "--latency-queries", "2",
            "--out", str(tmp_path / "sw")]
    assert main(args) == 0
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text())["settings"]["late_depth"] == 20
    args[args.index("--late-depth") + 1] = "8"
    assert main(args) == 2 and "exceeds --late-depth 8" in capsys.readouterr().err
