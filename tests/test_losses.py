import math

import pytest
import torch

from cascade import CascadeError
from cascade.train.losses import (
    DISTILL_LOSSES,
    get_loss,
    list_kl,
    listwise_softmax,
    margin_mse,
    pairwise_margin,
    pointwise_bce,
)

SCORES = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, -1.0]])


def test_pointwise_bce_by_hand():
    # labels [[1,0,0],[1,0,0]]; bce(x, 1) = log(1 + e^-x), bce(x, 0) = log(1 + e^x)
    terms = [math.log1p(math.exp(-2)), math.log1p(1), math.log1p(math.e),
             math.log1p(1), math.log1p(math.e), math.log1p(math.exp(-1))]
    assert pointwise_bce(SCORES).item() == pytest.approx(sum(terms) / 6, rel=1e-6)


def test_pairwise_margin_by_hand():
    # row 1: max(0, 1-2+0)=0, max(0, 1-2+1)=0 ; row 2: max(0, 1-0+1)=2, max(0, 1-0-1)=0 -> mean 0.5
    assert pairwise_margin(SCORES).item() == pytest.approx(0.5)


def test_listwise_softmax_by_hand():
    row1 = -(2 - math.log(math.exp(2) + math.exp(0) + math.exp(1)))
    row2 = -(0 - math.log(math.exp(0) + math.exp(1) + math.exp(-1)))
    assert listwise_softmax(SCORES).item() == pytest.approx((row1 + row2) / 2, rel=1e-6)


def test_losses_fall_when_the_positive_rises():
    better = SCORES.clone()
    better[:, 0] += 3
    for name in ("bce", "margin", "listwise"):
        loss = get_loss(name)
        assert loss(better).item() < loss(SCORES).item()
    with pytest.raises(CascadeError, match="unknown loss"):
        get_loss("hinge2")


TEACHER = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5]])


def test_margin_mse_by_hand():
    # student margins [[2, 1], [-1, 1]], teacher margins [[2, 3], [-1, 0.5]] -> squared errors 0, 4, 0, 0.25
    assert margin_mse(SCORES, TEACHER).item() == pytest.approx(4.25 / 4)
    assert margin_mse(TEACHER + 5.0, TEACHER).item() == pytest.approx(0.0)  # only margins matter


def test_list_kl_by_hand():
    def softmax(row):
        z = sum(math.exp(x) for x in row)
        return [math.exp(x) / z for x in row]

    total = 0.0
    for s, t in zip(SCORES.tolist(), TEACHER.tolist()):
        p, q = softmax(t), softmax(s)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert list_kl(SCORES, TEACHER).item() == pytest.approx(total / 2, rel=1e-5)
    assert list_kl(TEACHER, TEACHER).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_losses_by_name():
    assert get_loss("kl", DISTILL_LOSSES) is list_kl and get_loss("margin-mse", DISTILL_LOSSES) is margin_mse
    with pytest.raises(CascadeError, match="choose from margin-mse, kl"):
        get_loss("listwise", DISTILL_LOSSES)
