"""Retrain the rerankers bundled in cascade/weights/ from scratch, with the exact commands that made them.

    python benchmarks/train_bundled.py [--work DIR] [--stage teacher|student|all] [--resume]

1. teacher (cascade-reranker): `cascade train` on SciFact train (a seeded 10% of its queries held out as
   dev for checkpoint choice), from the bundled all-MiniLM-L6-v2 weights: listwise loss over 1 positive +
   7 negatives drawn from the hybrid top 30 plus 8 random passages per query;
2. student (cascade-reranker-small): `cascade distill` of the teacher into 3 of its 6 layers (0, 2, 5),
   MarginMSE on the teacher's scores mixed with 20% listwise label loss.

NFCorpus train is not used. Mixed in from the start (78% of the queries, ~40 relevance-1 labels each),
dev nDCG@10 stayed at a random reranker's level for 100+ steps, while SciFact alone learns within 50;
as a second stage after SciFact it lowered the mixed dev nDCG@10 (closing note of the training issue).
Test splits are never read. Each bundled model is copied into cascade/weights/<name>/ as bf16
safetensors with its tokenizer and model card (checkpoints and teacher-score caches stay in --work).
`python benchmarks/beir_eval.py` then measures the test numbers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "beir"
SCIFACT = str(DATA / "scifact")
SCHEDULE = ["--epochs", "3", "--lr", "1e-4", "--eval-every", "50", "--patience", "3"]


def steps(work: Path) -> dict[str, list[str]]:
    """The `cascade` command lines, in order: the student learns from the teacher."""
    return {
        "teacher": ["train", SCIFACT, "--out", str(work / "teacher"), "--easy-negatives", "8", *SCHEDULE],
        "student": ["distill", "--teacher", str(work / "teacher"), "--layers", "3", SCIFACT, "--out",
                    str(work / "student"), "--max-negatives", "7", "--max-positives", "2", "--easy-negatives", "3",
                    "--label-weight", "0.2", *SCHEDULE],
    }


BUNDLES = {"teacher": "cascade-reranker", "student": "cascade-reranker-small"}


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

    for name, argv in steps(args.work).items():
        if args.stage not in (name, "all"):
            continue
        if cascade(argv + (["--resume"] if args.resume else [])):
            sys.exit(f"{name} training failed")
        if name in BUNDLES:
            print("bundled", bundle(args.work / name, BUNDLES[name]))


if __name__ == "__main__":
    main()
