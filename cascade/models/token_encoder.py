"""The token encoder of late interaction: one unit vector per token (padding dropped), optionally projected.

Any Hugging Face encoder (default: the bundled MiniLM bi-encoder), optionally followed by a linear
projection that `cascade train --kind late-interaction` learns and saves beside the weights
(`late_interaction.json` + `late_projection.safetensors`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cascade.errors import CascadeError
from cascade.models.hub import DEFAULT_ENCODER, resolve
from cascade.models.runtime import autocast_dtype, compute_in, length_sorted_batches, load_model, padded_groups, pick_device

CONFIG = "late_interaction.json"
PROJECTION = "late_projection.safetensors"


class TokenEncoder:
    """Unit-norm token embeddings (padding dropped), optionally projected to a smaller dimension."""

    def __init__(self, model: str = DEFAULT_ENCODER, device: str | None = None, precision: str = "auto",
                 doc_max_length: int = 256, query_max_length: int = 64):
        path = Path(resolve(model))
        dev = pick_device(device)
        tokenizer, encoder = load_model("AutoModel", str(path), model, "token encoder", dev)  # as the bi-encoder
        projection = load_projection(path, int(encoder.config.hidden_size))
        self._init(model, tokenizer, encoder, projection, dev, precision, doc_max_length, query_max_length)

    @classmethod
    def wrap(cls, model_id: str, tokenizer, encoder: torch.nn.Module, projection: torch.nn.Linear | None,
             device: torch.device, precision: str = "auto", doc_max_length: int = 256,
             query_max_length: int = 64) -> "TokenEncoder":
        """A TokenEncoder over modules already in memory (training scores dev queries with the live weights)."""
        self = cls.__new__(cls)
        self._init(model_id, tokenizer, encoder, projection, device, precision, doc_max_length, query_max_length)
        return self

    def _init(self, model_id, tokenizer, encoder, projection, device, precision, doc_max_length, query_max_length):
        self.model_id, self.tokenizer, self.model, self.device = model_id, tokenizer, encoder, device
        self.projection = projection.to(device) if projection is not None else None
        self.dtype = autocast_dtype(device, precision)
        self.doc_max_length, self.query_max_length = doc_max_length, query_max_length
        self.dim = self.projection.out_features if self.projection is not None else int(encoder.config.hidden_size)

    def token_vectors(self, features: dict) -> torch.Tensor:
        """[batch, tokens, dim] unit vectors for tokenised `features` (differentiable: training uses it)."""
        hidden = self.model(**features).last_hidden_state
        if self.projection is not None:
            hidden = self.projection(hidden.to(self.projection.weight.dtype))
        return torch.nn.functional.normalize(hidden.float(), dim=-1)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], query: bool = False, batch_size: int = 16, progress: bool = False,
               dtype: type = np.float32) -> list[np.ndarray]:
        """One [tokens, dim] array per text, in input order (float16 halves an index build's memory)."""
        max_length = self.query_max_length if query else self.doc_max_length
        compute = None if query else self.dtype  # queries in fp32, as the bi-encoder's
        enc = self.tokenizer(list(texts), truncation=True, max_length=max_length)
        out: list[np.ndarray] = [np.empty((0, self.dim), np.float32)] * len(texts)
        bar = tqdm(total=len(texts), desc="encoding passage tokens", unit="psg", disable=not progress)
        for batch in length_sorted_batches([len(i) for i in enc["input_ids"]], batch_size):
            for positions, features in padded_groups(self.tokenizer, enc, batch, self.device, max_length, compute):
                with compute_in(self.model, compute):
                    vectors = self.token_vectors(features).cpu().numpy()
                for row, i in enumerate(batch[positions]):
                    out[i] = vectors[row, : len(enc["input_ids"][i])].astype(dtype)
            bar.update(len(batch))
        bar.close()
        return out


def load_projection(path: Path, hidden: int) -> torch.nn.Linear | None:
    """The trained projection saved beside a late-interaction model's weights, if it has one."""
    config = path / CONFIG
    if not config.is_file():
        return None
    from safetensors.torch import load_file

    try:
        dim = int(json.loads(config.read_text(encoding="utf-8"))["dim"])
        projection = torch.nn.Linear(hidden, dim, bias=False)
        projection.load_state_dict(load_file(str(path / PROJECTION)))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CascadeError(f"{path}: unreadable late-interaction projection ({str(e).splitlines()[0]})") from None
    return projection.float().eval()
