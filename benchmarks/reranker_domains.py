"""Does a reranker help on every domain? Dev nDCG@10 per domain: first stage, reranker alone, blended.

    python benchmarks/reranker_domains.py [--model NAME=PATH[,PATH...] ...] [--name reranker-domains]

Dev sets only (the test splits are for beir_eval.py): SciFact's seeded 10% of train that `cascade train`
holds out, and NFCorpus's dev split (all 324 queries). Each query's hybrid top 30 is scored once per model,
then read three ways: first-stage order, the reranker alone, and blended with the first stage as search runs
it (cascade/rerank/blend.py). The mean over domains is what checkpoint choice maximises. A model trained
without one domain (leave-one-domain-out) is just another --model row: its row on that domain is the number
that says whether the recipe generalises. Every later --model is also compared with the first on the same queries,
with a bootstrap interval: SciFact's 81 dev queries are few, and twice preferred what its test split did not.
Writes benchmarks/results/NAME.{json,md} and the README table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from _common import DATA, machine, publish

DOMAINS = ("scifact", "nfcorpus")


def model_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def dev_queries(dev_fraction: float = 0.1) -> list:
    """Every domain's dev queries with their hybrid top 30 (what each model is measured on); SciFact's are the
    seeded `dev_fraction` of train that `cascade train --dev-fraction` holds out (models must share it)."""
    from cascade.train.config import TrainConfig
    from cascade.train.prepare import prepare

    dev = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in DOMAINS:
            dev += prepare([DATA / name], TrainConfig(out=tmp, dev_fraction=dev_fraction), progress=False,
                           mine_train=False).dev
    return dev


def mean_blended(model: str, dev: list) -> float:
    """The selection rule: the mean over domains of the blended cascade's dev nDCG@10 with `model`."""
    from cascade.train.dev import dev_report, selection_score

    return selection_score(dev_report(as_search_loads(model), dev, batch_size=8))


def as_search_loads(model: str):
    """The cross-encoder with the window search fits to the dev indexes' passages (the default settings)."""
    from cascade.rerank import CrossEncoder
    from cascade.settings import IndexSettings

    return CrossEncoder(model, fit=IndexSettings().pair_tokens)


class Ensemble:
    """Several models' dev scores combined as `cascade distill` combines its teachers (each model's logits
    standardised over all dev pairs, then averaged): the target a student of that ensemble learns. It replays
    them to `dev_values`, which asks for the dev queries in order."""

    def __init__(self, paths: list[str], dev: list):
        import numpy as np

        from cascade.train.distill import ensemble

        per_model = [np.concatenate([model.predict([(q.query, t) for _, t in q.candidates], batch_size=8,
                                                   raw_scores=True) for q in dev]) for model in map(as_search_loads, paths)]
        ends = np.cumsum([len(q.candidates) for q in dev])[:-1]
        self.scores = iter(np.split(ensemble(per_model), ends))

    def predict(self, pairs: list, **_):
        """The next dev query's ensemble scores (`pairs` are that query's, in order)."""
        return next(self.scores)


def scorer(path: str, dev: list):
    """A model, or with PATH,PATH,... an ensemble of them."""
    paths = path.split(",")
    return Ensemble(paths, dev) if len(paths) > 1 else as_search_loads(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=model_arg, action="append", default=[], metavar="NAME=PATH",
                        help="a reranker to measure (repeatable; default: the bundled cascade-reranker); "
                             "PATH,PATH,... measures the ensemble `cascade distill --teacher PATH --teacher PATH` "
                             "would learn from")
    parser.add_argument("--name", default="reranker-domains", help="output name under benchmarks/results/")
    parser.add_argument("--dev-fraction", type=float, default=0.1,
                        help="SciFact's held-out share of train, as the models were trained with (0.1)")
    args = parser.parse_args()

    from cascade.train.dev import dev_values

    models = args.model or [("cascade-reranker", "cascade-reranker")]
    dev, rows = dev_queries(args.dev_fraction), {}
    for name, path in models:
        start = time.perf_counter()
        values = dev_values(scorer(path, dev), dev, batch_size=8)
        report = {d: {view: sum(v) / len(v) for view, v in row.items()} for d, row in values.items()}
        rows[name] = {"path": path, "seconds": round(time.perf_counter() - start, 1), "domains": report,
                      "per_query": {d: {view: row[view] for view in ("first_stage", "blended")}
                                    for d, row in values.items()}}
        print(name, json.dumps(report), flush=True)
    counts = {d: sum(q.source == d for q in dev) for d in DOMAINS}
    first = {d: next(iter(rows.values()))["domains"][d]["first_stage"] for d in DOMAINS}
    lines = [f"Dev nDCG@10 (SciFact: {counts['scifact']} held-out train queries; NFCorpus: {counts['nfcorpus']} dev "
             "queries), hybrid top 30 reranked; blended = what search runs (equal blended scores go to the reranker's "
             "order; the last column leaves them in first-stage order, as before). In brackets: change over the first "
             "stage.\n",
             "| reranker | " + " | ".join(f"{d} alone | {d} blended" for d in DOMAINS)
             + " | mean blended | mean blended, ties to the first stage (before) |",
             "|---|" + "---:|---:|" * len(DOMAINS) + "---:|---:|",
             "| first stage (hybrid) | " + " | ".join(f"{first[d]:.4f} | {first[d]:.4f}" for d in DOMAINS)
             + f" | {sum(first.values()) / len(DOMAINS):.4f} | |"]
    for name, row in rows.items():
        cells = [f"{row['domains'][d]['alone']:.4f} ({row['domains'][d]['alone'] - first[d]:+.3f}) | "
                 f"{row['domains'][d]['blended']:.4f} ({row['domains'][d]['blended'] - first[d]:+.3f})" for d in DOMAINS]
        mean, tied = (sum(row["domains"][d][view] for d in DOMAINS) / len(DOMAINS)
                      for view in ("blended", "blended_ties_first"))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean:.4f} | {tied:.4f} |")
    lines += paired_lines(rows)
    table = "\n".join(lines) + "\n"
    publish(args.name, {"machine": machine(), "dev_queries": counts, "models": rows}, table,
            marker="reranker-domains" if args.name == "reranker-domains" else None)
    print(table)


def paired_lines(rows: dict) -> list[str]:
    """Each model's blended change over the first stage, and each later model's over the first one, per domain,
    with its 95% bootstrap interval over the same queries (`cascade.evaluate.metrics.paired_bootstrap`)."""
    from cascade.evaluate.metrics import paired_bootstrap

    names = list(rows)
    lines = ["", "Blended changes on the same queries with their 95% bootstrap interval (queries resampled, 10,000 "
             "draws, seed 0); an interval that holds 0 cannot tell the two apart:", "",
             "| reranker | " + " | ".join(f"{d}: vs first stage | {d}: vs `{names[0]}`" for d in DOMAINS) + " |",
             "|---|" + "---:|---:|" * len(DOMAINS)]
    for name in names:
        cells = []
        for d in DOMAINS:
            mine = rows[name]["per_query"][d]
            pairs = {"first_stage": mine["first_stage"]}
            if name != names[0]:
                pairs[names[0]] = rows[names[0]]["per_query"][d]["blended"]
            for against, before in pairs.items():
                delta, low, high = paired_bootstrap(before, mine["blended"])
                rows[name].setdefault("paired", {}).setdefault(d, {})[against] = {"delta": delta, "low": low,
                                                                                 "high": high}
            cells += [f"{v['delta']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]" for v in rows[name]["paired"][d].values()]
            cells += [""] * (name == names[0])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
