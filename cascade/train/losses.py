"""Ranking losses over score matrices of shape (queries, 1 + negatives); column 0 is the positive.

Label losses see the student's scores and, for graded labels, `targets` of the same shape: each item's
gain relative to column 0's (1 there, 0 for a negative, between for a lower-graded positive; None: binary).
Distillation losses also see the teacher's scores for the same pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cascade.errors import CascadeError


def binary(scores: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    if targets is not None:
        return targets
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    return labels


def pointwise_bce(scores: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy per pair against its target: the positive 1, every negative 0."""
    return F.binary_cross_entropy_with_logits(scores, binary(scores, targets))


def pairwise_margin(scores: torch.Tensor, targets: torch.Tensor | None = None, margin: float = 1.0) -> torch.Tensor:
    """Hinge on each (positive, item) pair the positive should win: mean of max(0, margin - s(q,d+) + s(q,d))."""
    t = binary(scores, targets)
    wins = (t[:, :1] > t[:, 1:]).float()
    return (F.relu(margin - scores[:, :1] + scores[:, 1:]) * wins).sum() / wins.sum().clamp(min=1.0)


def listwise_softmax(scores: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax cross-entropy over the list against the targets' distribution: -log p(positive) among
    1 positive + N negatives when binary."""
    t = binary(scores, targets)
    return -(t / t.sum(dim=1, keepdim=True) * F.log_softmax(scores, dim=1)).sum(dim=1).mean()


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
