"""Ranking losses over score matrices of shape (queries, 1 + negatives); column 0 is the positive.

Label losses see the student's scores only; distillation losses also see the teacher's scores for
the same pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cascade.errors import CascadeError


def pointwise_bce(scores: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per pair: the positive is labelled 1, every negative 0."""
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(scores, labels)


def pairwise_margin(scores: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Hinge on each (positive, negative) pair: mean of max(0, margin - s(q,d+) + s(q,d-))."""
    return F.relu(margin - scores[:, :1] + scores[:, 1:]).mean()


def listwise_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over the list: -log p(positive) among 1 positive + N negatives."""
    return F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))


LOSSES = {"bce": pointwise_bce, "margin": pairwise_margin, "listwise": listwise_softmax}


def margin_mse(scores: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MarginMSE: the student's positive-minus-negative margins regress onto the teacher's."""
    return F.mse_loss(scores[:, :1] - scores[:, 1:], teacher[:, :1] - teacher[:, 1:])


def list_kl(scores: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) between softmax distributions over each candidate list."""
    return F.kl_div(F.log_softmax(scores, dim=1), F.log_softmax(teacher, dim=1), log_target=True,
                    reduction="batchmean")


DISTILL_LOSSES = {"margin-mse": margin_mse, "kl": list_kl}


def get_loss(name: str, table: dict = LOSSES):
    """A loss by name from `table` (LOSSES or DISTILL_LOSSES), or a clear error listing the choices."""
    if name not in table:
        raise CascadeError(f"unknown loss {name!r} (choose from {', '.join(table)})")
    return table[name]
