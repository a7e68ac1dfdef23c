"""Rendering evaluation results: terminal/Markdown tables, JSON, TREC run files, plots, reports."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cascade.errors import CascadeError
from cascade.evaluate.metrics import ranked
from cascade.fileio import atomic_write

if TYPE_CHECKING:
    from cascade.evaluate.runner import EvalResult
    from cascade.evaluate.sweep import SweepResult

LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "p@5": "P@5"}


def label(metric: str) -> str:
    return LABELS.get(metric, metric.replace("recall@", "R@"))


def stage_table(result: "EvalResult") -> str:
    """Markdown table: one row per stage, each metric with its change over the stage above."""
    names = result.metric_names()
    head = ["stage", *map(label, names), "p50 ms", "p95 ms"]
    rows = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    previous = None
    for stage, r in result.stages.items():
        cells = []
        for m in names:
            value = r.metrics[m]
            delta = f" ({value - previous.metrics[m]:+.3f})" if previous else ""
            cells.append(f"{value:.3f}{delta}")
        rows.append(f"| {stage} | " + " | ".join(cells) +
                    f" | {r.latency_ms['p50']:.1f} | {r.latency_ms['p95']:.1f} |")
        previous = r
    return "\n".join(rows) + "\n"


def eval_json(result: "EvalResult", notes: list[str]) -> dict:
    stages = {}
    previous = None
    for stage, r in result.stages.items():
        stages[stage] = {**{m: round(v, 6) for m, v in r.metrics.items()},
                         "latency_ms": {k: round(v, 3) for k, v in r.latency_ms.items()},
                         "delta": ({m: round(v - previous.metrics[m], 6) for m, v in r.metrics.items()}
                                   if previous else None)}
        previous = r
    return {"dataset": result.dataset, "split": result.split, "queries": result.queries,
            "settings": result.settings, "stages": stages, "diagnostics": notes}


def write_json(path: str | Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def write_runs(result: "EvalResult", directory: str | Path) -> list[Path]:
    """One TREC run file per stage: `qid Q0 docid rank score tag`, scores as `run_scores` writes them."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise CascadeError(f"--run-dir {out} is a file")
    paths = []
    for stage, r in result.stages.items():
        tag = f"cascade-{stage}"
        lines = [f"{qid} Q0 {doc} {rank} {score!r} {tag}"
                 for qid, docs in r.run.items()
                 for rank, (doc, score) in enumerate(run_scores(ranked(docs), docs), 1)]
        paths.append(atomic_write(out / f"{stage}.run", "\n".join(lines) + "\n"))
    return paths


def run_scores(order: list[str], scores: dict[str, float]) -> list[tuple[str, float]]:
    """(doc, score) in our order, each score in single precision and strictly below the one before it.

    trec_eval (pytrec_eval too) reads scores as 32-bit floats and breaks ties by doc id, but blended scores that
    the reranker's rank breaks differ by ~1e-15 (cascade/rerank/blend.py): nudging each to the next float32
    below its predecessor where needed keeps our order in their reading and moves a score by a few float32 steps."""
    out, previous = [], np.float32(np.inf)
    for doc in order:
        value = min(np.float32(scores[doc]), np.nextafter(previous, np.float32(-np.inf)))
        out.append((doc, float(value)))
        previous = value
    return out


PLOTS_NEED = "plots skipped: they need matplotlib (pip install 'cascade-retrieval[report]')"


def _pyplot():
    """pyplot on a file-only backend, or None without the `report` extra (reports then go without plots)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_stages(result: "EvalResult", path: str | Path) -> Path | None:
    """Bars of quality per stage next to bars of p50 latency: what each stage buys and costs."""
    plt = _pyplot()
    if plt is None:
        return None
    stages = list(result.stages)
    metrics = ["ndcg@10", "mrr@10", "recall@100"]
    fig, (ax, lat) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(stages))]
        ax.bar(xs, [result.stages[s].metrics[m] for s in stages], width, label=label(m))
    ax.set_xticks(range(len(stages)), stages)
    ax.set_ylim(0, 1.15)
    ax.set_title(f"{result.dataset} / {result.split}: quality by stage")
    ax.legend(loc="upper center", ncols=len(metrics), frameon=False)
    lat.bar(stages, [result.stages[s].latency_ms["p50"] for s in stages], color="gray")
    lat.set_yscale("log")
    lat.set_ylabel("p50 latency per query (ms)")
    lat.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_sweep(sweep: "SweepResult", path: str | Path) -> Path | None:
    """nDCG@10 and p50 rerank latency against rerank depth, with the suggested depth marked."""
    plt = _pyplot()
    if plt is None:
        return None
    depths = [row["depth"] for row in sweep.rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(depths, [row["ndcg@10"] for row in sweep.rows], "o-", color="tab:blue", label="nDCG@10")
    ax.axhline(sweep.baseline["ndcg@10"], color="tab:blue", ls=":", label="first stage (no rerank)")
    ax.set_xlabel("rerank depth")
    ax.set_ylabel("nDCG@10", color="tab:blue")
    ax.axvline(sweep.suggested, color="green", ls="--", label=f"suggested depth {sweep.suggested}")
    lat = ax.twinx()
    lat.plot(depths, [row["latency_ms"]["p50"] for row in sweep.rows], "s-", color="tab:red", label="p50 ms")
    lat.set_ylabel("p50 rerank latency (ms)", color="tab:red")
    ax.set_title(f"{sweep.dataset} / {sweep.split}: quality and latency vs rerank depth")
    lines = ax.get_legend_handles_labels()[0] + lat.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    from io import BytesIO

    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def sweep_table(sweep: "SweepResult") -> str:
    rows = ["| rerank depth | nDCG@10 | Δ vs first stage | p50 ms | p95 ms |", "|---:|---:|---:|---:|---:|"]
    for row in sweep.rows:
        mark = " ← suggested" if row["depth"] == sweep.suggested else ""
        rows.append(f"| {row['depth']}{mark} | {row['ndcg@10']:.3f} | {row['ndcg@10'] - sweep.baseline['ndcg@10']:+.3f}"
                    f" | {row['latency_ms']['p50']:.1f} | {row['latency_ms']['p95']:.1f} |")
    return "\n".join(rows) + "\n"


def write_report(path: str | Path, title: str, sections: list[tuple[str, str]], plot: Path | None) -> Path:
    """A Markdown (.md) or self-contained HTML (.html) report: table(s), plot, findings."""
    path = Path(path)
    if path.suffix.lower() not in (".md", ".html", ".htm"):
        raise CascadeError(f"--report {path}: use a .md or .html file name")
    if path.suffix.lower() == ".md":
        parts = [f"# {title}\n"]
        for heading, body in sections:
            parts.append(f"## {heading}\n\n{body}\n")
        if plot is not None:
            parts.insert(2, f"![plot]({Path(plot).name})\n")
        return atomic_write(path, "\n".join(parts))
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, text in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>{_md_to_html(text)}")
    if plot is not None:
        data = base64.b64encode(Path(plot).read_bytes()).decode()
        body.insert(2, f'<img alt="plot" src="data:image/png;base64,{data}">')
    page = ("<!doctype html><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
            "body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child{text-align:left}"
            "</style>" + "".join(body))
    return atomic_write(path, page)


def _md_to_html(text: str) -> str:
    """The two Markdown shapes our sections use: pipe tables and '- ' bullet lists."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines and lines[0].startswith("|"):
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if not set(ln) <= set("|-: ")]
        head, *rows = cells
        return ("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" +
                "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) +
                "</table>")
    return "<ul>" + "".join(f"<li>{html.escape(ln.lstrip('- '))}</li>" for ln in lines) + "</ul>"
