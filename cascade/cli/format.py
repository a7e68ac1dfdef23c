"""Human-readable rendering of search results for the terminal."""

from __future__ import annotations

import json
import textwrap

from cascade.results import SearchResult


def format_result(result: SearchResult) -> str:
    lines = [f"query: {result.query}", format_rerank_status(result.rerank)]
    if result.llm:
        llm = result.llm
        state = f"DEGRADED: {llm['reason']}" if llm["degraded"] else f"top {llm['depth']}"
        lines.append(f"llm: {llm['model']} ({state}; {llm['calls']} calls, {llm['tokens']['prompt']} prompt + "
                     f"{llm['tokens']['completion']} completion tokens)")
    lines.append("")
    ran = [name for name in ("late", "llm") if name in result.timings_ms]
    columns = [("bm25", "bm25"), ("dense", "dense"), ("fusion", "fused"), ("late", "late"), ("rerank", "rerank"),
               ("llm", "llm")]
    for h in result.hits:
        stages = []
        for name, label in columns:
            if name in ("late", "llm") and name not in ran:
                continue
            rank, score, own = h.stage_ranks[name], h.stage_scores[name], h.model_scores.get(name)
            if not rank:
                stages.append(f"{label} -")
                continue
            shown = f"{score:.3f}" if own is None or own == score else f"{score:.3f}; model {own:.3f}"  # blended, own
            stages.append(f"{label} #{rank} ({shown})")
        title = f"  {h.title}" if h.title else ""
        lines.append(f"{h.rank:>2}. [{h.id}]{title}")
        lines.append(f"    {' · '.join(stages)}")
        lines.append(textwrap.indent(textwrap.shorten(h.text, 220, placeholder=" …"), "    "))
    lines.append("")
    lines.append("timings (ms): " + " · ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items()))
    return "\n".join(lines)


def format_rerank_status(rerank: dict) -> str:
    cached = f", {rerank['cache_hits']} cached" if rerank.get("cache_hits") else ""
    if rerank["status"] == "ok":
        return f"rerank: {rerank['model']} (top {rerank['depth']}{cached})"
    if rerank["status"] == "degraded":
        return (f"rerank: {rerank['model']} DEGRADED: latency budget allowed {rerank['scored']} of top "
                f"{rerank['depth']}{cached}; the rest keep first-stage order")
    return f"rerank: {rerank['status']} ({rerank['reason']})"


def print_json(data: dict) -> None:
    """What `--json` prints on every command: one JSON object on stdout."""
    print(json.dumps(data, ensure_ascii=False))
