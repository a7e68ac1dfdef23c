"""BEIR datasets for evaluation: judged queries and graded relevance for one split."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from cascade.documents import read_jsonl
from cascade.errors import CascadeError


@dataclass
class Split:
    name: str  # dataset folder name, e.g. "scifact"
    path: Path
    split: str
    queries: dict[str, str]  # judged queries of this split only, in qrels order
    qrels: dict[str, dict[str, int]]


def available_splits(path: Path) -> list[str]:
    return sorted(p.stem for p in (path / "qrels").glob("*.tsv"))


def load_split(path: str | Path, split: str) -> Split:
    """Queries and qrels of `split`; every judged query must have text."""
    root = Path(path)
    if not root.is_dir():
        raise CascadeError(f"dataset not found: {root} (expected a BEIR folder)")
    qrels_file = root / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        have = ", ".join(available_splits(root)) or "none"
        raise CascadeError(f"{root} has no qrels/{split}.tsv (splits available: {have})")
    queries_file = root / "queries.jsonl"
    if not queries_file.is_file():
        raise CascadeError(f"{root} has no queries.jsonl")
    qrels: dict[str, dict[str, int]] = {}
    try:
        with open(qrels_file, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t")
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
                raise CascadeError(f"{qrels_file}: expected the header 'query-id<TAB>corpus-id<TAB>score'")
            for n, row in enumerate(reader, 2):
                if not row:
                    continue
                if len(row) < 3:
                    raise CascadeError(f"{qrels_file}:{n}: expected 3 tab-separated columns")
                try:
                    qrels.setdefault(row[0], {})[row[1]] = int(row[2])
                except ValueError:
                    raise CascadeError(f"{qrels_file}:{n}: relevance {row[2]!r} is not an integer") from None
    except UnicodeDecodeError as e:
        raise CascadeError(f"{qrels_file}: not valid UTF-8 (byte {e.start})") from None
    if not qrels:
        raise CascadeError(f"{qrels_file} has no judgments")
    texts = {str(o.get("_id", o.get("id"))): o.get("text", "") for _, o in read_jsonl(queries_file)}
    missing = [q for q in qrels if not str(texts.get(q, "")).strip()]
    if missing:
        raise CascadeError(f"{len(missing)} judged queries have no text in {queries_file} (e.g. {missing[0]!r})")
    return Split(name=root.name, path=root, split=split, queries={q: texts[q] for q in qrels}, qrels=qrels)
