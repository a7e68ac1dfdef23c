"""Retrain the rerankers bundled in cascade/weights/ from scratch, with the exact commands that made them.

    python benchmarks/train_bundled.py [--work DIR] [--stage teacher|student|all] [--resume]

1. teacher: `cascade train` on SciFact train (a seeded 10% of its queries held out as dev for checkpoint
   choice), from the bundled all-MiniLM-L6-v2 weights, listwise loss over 1 positive + 7 negatives drawn
   from the hybrid top 30 and 8 random passages per query;
2. student: `cascade distill` of the teacher into 3 of its 6 layers (0, 2, 5), MarginMSE on the teacher's
   scores mixed with 20% listwise label loss.

NFCorpus train is not used: mixed into training from the start (78% of the queries, relevance-1 labels
only, ~40 per query), dev nDCG@10 stayed at the level of a random reranker for 100+ steps while SciFact
alone learns within 50 (see the closing note of the training issue). Test splits are never read.

Each model is copied into cascade/weights/<name>/ as bf16 safetensors with its tokenizer and model card
(training checkpoints and teacher-score caches stay in --work). Timings and dev numbers land in the model
cards; `python benchmarks/beir_eval.py` then measures the test numbers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "beir"
DATASETS = [str(DATA / "scifact")]
COMMON = ["--epochs", "3", "--lr", "1e-4", "--eval-every", "50", "--patience", "3"]


def teacher_args(work: Path) -> list[str]:
    return ["train", *DATASETS, "--out", str(work / "teacher"), "--easy-negatives", "8", *COMMON]


def student_args(work: Path) -> list[str]:
    return ["distill", "--teacher", str(work / "teacher"), "--layers", "3", *DATASETS, "--out", str(work / "student"),
            "--max-negatives", "7", "--max-positives", "4", "--easy-negatives", "4", "--label-weight", "0.2", *COMMON]


def bundle(src: Path, name: str) -> Path:
    """Copy a trained folder into the package as bf16 safetensors + tokenizer + model card."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cascade.fileio import atomic_write
    from cascade.models import BUNDLED_RERANKERS, WEIGHTS_DIR

    dst = WEIGHTS_DIR / BUNDLED_RERANKERS[name]
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForSequenceClassification.from_pretrained(src)
    model.to(torch.bfloat16).save_pretrained(tmp)
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
    card = (src / "README.md").read_text(encoding="utf-8")
    atomic_write(tmp / "README.md", card.replace("# Cascade cross-encoder reranker", f"# {name}", 1))
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "results" / "tmp" / "train",
                        help="training folders, checkpoints and caches (default: results/tmp/train, git-ignored)")
    parser.add_argument("--stage", choices=("teacher", "student", "all"), default="all")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints")
    args = parser.parse_args()

    from cascade.cli import main as cascade

    resume = ["--resume"] if args.resume else []
    if args.stage in ("teacher", "all"):
        if cascade(teacher_args(args.work) + resume):
            sys.exit("teacher training failed")
        print("bundled", bundle(args.work / "teacher", "cascade-reranker"))
    if args.stage in ("student", "all"):
        if cascade(student_args(args.work) + resume):
            sys.exit("student distillation failed")
        print("bundled", bundle(args.work / "student", "cascade-reranker-small"))


if __name__ == "__main__":
    main()
