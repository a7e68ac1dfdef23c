"""Distillation: teachers score every training pair once; a smaller student learns those scores.

Teacher scoring is the expensive part, so each teacher's scores are cached beside the student (keyed by the
teacher and a digest of the pairs) and a rerun or `--resume` reuses them. Several teachers make an ensemble:
their logits are standardised per teacher and averaged, then put back on the first teacher's scale (the
student starts from its layers, and MarginMSE regresses margins in logit units). On the dev sets an
ensemble of the SciFact-trained teacher and one trained without SciFact ranked better than either, yet its
student did not beat the bundled one (benchmarks/train_bundled.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from cascade.errors import CascadeError
from cascade.fileio import atomic_write
from cascade.rerank.cross_encoder import CrossEncoder
from cascade.train.data import Example

CACHE = "teacher_scores.json"


def teacher_pairs(examples: Sequence[Example]) -> list[tuple[str, str]]:
    """Every (query, passage) pair training can draw, in a fixed order."""
    return [(ex.query, text) for ex in examples for text in dict.fromkeys(ex.positives + ex.negatives)]


def ensemble(scores: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of each teacher's standardised logits, on the first teacher's scale (one teacher: unchanged)."""
    if len(scores) == 1:
        return np.asarray(scores[0], dtype=float)
    z = np.mean([(s - s.mean()) / (s.std() or 1.0) for s in map(np.asarray, scores)], axis=0)
    first = np.asarray(scores[0], dtype=float)
    return first.mean() + first.std() * z


def _cached(cache: Path) -> dict[str, list[float]]:
    """Scores by digest; a damaged cache, or one of a single teacher's written before ensembles, is empty: its
    scores are recomputed, never trusted."""
    try:
        scores = json.loads(cache.read_text(encoding="utf-8"))["scores"] if cache.is_file() else {}
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return {}
    return scores if isinstance(scores, dict) else {}


def score_with_teachers(examples: Sequence[Example], teachers: Sequence[str], out: str | Path,
                        device: str | None = None, max_length: int = 256, batch_size: int = 16,
                        progress: bool = True) -> None:
    """Fill each example's `teacher` scores (the ensemble of `teachers`), reusing `out/teacher_scores.json`
    for every teacher whose scores of these pairs it holds; it is rewritten after each teacher, so an
    interrupted run keeps the teachers it finished."""
    if not teachers:
        raise CascadeError("distillation needs at least one teacher")
    pairs, cache = teacher_pairs(examples), Path(out) / CACHE
    saved, kept, names = _cached(cache), {}, {}
    for teacher in teachers:
        digest = hashlib.sha256(json.dumps([teacher, max_length, pairs]).encode("utf-8")).hexdigest()
        fresh = not isinstance(saved.get(digest), list) or len(saved[digest]) != len(pairs)
        if fresh:
            model = CrossEncoder(teacher, device=device, max_length=max_length)
            saved[digest] = model.predict(pairs, batch_size=batch_size, progress=progress, raw_scores=True).tolist()
        kept[digest], names[digest] = saved[digest], teacher
        if fresh:
            atomic_write(cache, json.dumps({"teachers": names, "scores": kept}))
    if kept.keys() != saved.keys():  # scores of teachers no longer asked for are dropped
        atomic_write(cache, json.dumps({"teachers": names, "scores": kept}))
    it = iter(ensemble([np.asarray(s) for s in kept.values()]).tolist())
    for ex in examples:
        ex.teacher = {text: next(it) for text in dict.fromkeys(ex.positives + ex.negatives)}
