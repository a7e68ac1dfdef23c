"""Distillation: a teacher scores every training pair once; a smaller student learns those scores.

Teacher scoring is the expensive part, so the scores are cached beside the student (keyed by the
teacher and a digest of the pairs) and a rerun or `--resume` reuses them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from cascade.errors import CascadeError
from cascade.fileio import atomic_write
from cascade.rerank.cross_encoder import CrossEncoder
from cascade.train.data import Example

CACHE = "teacher_scores.json"


def teacher_pairs(examples: Sequence[Example]) -> list[tuple[str, str]]:
    """Every (query, passage) pair training can draw, in a fixed order."""
    return [(ex.query, text) for ex in examples for text in dict.fromkeys(ex.positives + ex.negatives)]


def score_with_teacher(examples: Sequence[Example], teacher: str, out: str | Path, device: str | None = None,
                       max_length: int = 256, batch_size: int = 16, progress: bool = True) -> None:
    """Fill each example's `teacher` scores, from `out/teacher_scores.json` when it matches."""
    pairs = teacher_pairs(examples)
    digest = hashlib.sha256(json.dumps([teacher, max_length, pairs]).encode("utf-8")).hexdigest()
    cache = Path(out) / CACHE
    scores = None
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text(encoding="utf-8"))
            scores = saved["scores"] if saved.get("digest") == digest else None
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            scores = None  # a damaged cache is recomputed, never trusted
    if scores is None:
        model = CrossEncoder(teacher, device=device, max_length=max_length)
        scores = model.predict(pairs, batch_size=batch_size, progress=progress, raw_scores=True).tolist()  # logits
        atomic_write(cache, json.dumps({"teacher": teacher, "digest": digest, "scores": scores}))
    if len(scores) != len(pairs):
        raise CascadeError(f"{cache}: {len(scores)} cached scores for {len(pairs)} pairs; delete it and rerun")
    it = iter(scores)
    for ex in examples:
        ex.teacher = {text: next(it) for text in dict.fromkeys(ex.positives + ex.negatives)}
