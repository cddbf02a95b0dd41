"""Losses on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import LossWeights, bce_loss, dice_loss, segmentation_loss, total_loss


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)[None, None]  # (1, 1, H, W)


def test_bce_matches_hand_computation():
    logits = _t([[2.0, -1.0], [0.0, 3.0]])
    target = _t([[1.0, 0.0], [1.0, 0.0]])
    # -log(sigmoid(2)), -log(1 - sigmoid(-1)), -log(sigmoid(0)), -log(1 - sigmoid(3))
    expected = (
        math.log1p(math.exp(-2.0))
        + math.log1p(math.exp(-1.0))
        + math.log(2.0)
        + math.log1p(math.exp(3.0))
    ) / 4
    assert bce_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_bce_ignores_void_pixels():
    logits = _t([[5.0, 5.0]])
    target = _t([[1.0, 0.0]])  # the second pixel would cost ~5.0
    valid = _t([[1.0, 0.0]])
    assert bce_loss(logits, target, valid).item() == pytest.approx(math.log1p(math.exp(-5.0)))


def test_dice_perfect_prediction_is_zero():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:5, 3:6] = 1
    logits = (target * 2 - 1) * 30.0  # sigmoid -> exactly 0/1 in float32
    assert dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_empty_prediction_of_object_is_near_one():
    target = torch.zeros(1, 1, 8, 8)
    target[..., :2, :5] = 1  # 10 pixels
    logits = torch.full_like(target, -30.0)
    # 1 - (0 + s) / (0 + 10 + s), s = 1
    assert dice_loss(logits, target).item() == pytest.approx(1 - 1 / 11, rel=1e-5)


def test_dice_empty_prediction_of_empty_target_is_zero():
    target = torch.zeros(2, 1, 4, 4)
    logits = torch.full_like(target, -30.0)
    assert dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_half_overlap():
    # p = 1 on 4 pixels, target on 4 pixels, 2 shared: 1 - (2*2 + 1) / (4 + 4 + 1) = 4/9
    logits = _t([[30.0, 30.0, 30.0, 30.0, -30.0, -30.0]])
    target = _t([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    assert dice_loss(logits, target).item() == pytest.approx(4 / 9, rel=1e-5)


def test_segmentation_and_total_loss_weights():
    logits = torch.randn(2, 1, 6, 6)
    target = (torch.rand(2, 1, 6, 6) > 0.5).float()
    w = LossWeights(bce=2.0, dice=0.5, aux=0.25)
    seg = segmentation_loss(logits, target, weights=w)
    assert seg["loss"].item() == pytest.approx(2.0 * seg["bce"].item() + 0.5 * seg["dice"].item())
    aux = [torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6)]
    tot = total_loss(logits, aux, target, weights=w)
    aux_expected = 0.25 * sum(segmentation_loss(a, target, weights=w)["loss"].item() for a in aux)
    assert tot["aux"].item() == pytest.approx(aux_expected, rel=1e-5)
    assert tot["loss"].item() == pytest.approx(seg["loss"].item() + aux_expected, rel=1e-5)
    assert total_loss(logits, [], target, weights=w)["aux"].item() == 0.0


def test_loss_gradient_reaches_logits():
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    target = torch.ones(1, 1, 4, 4)
    total_loss(logits, [], target)["loss"].backward()
    assert (logits.grad < 0).all()  # raising the logits lowers the loss


@pytest.mark.parametrize(
    "logits, target, valid, match",
    [
        (torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), None, "logits must be"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), None, "target shape"),
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 2, 2), "valid shape"),
    ],
)
def test_bad_shapes_raise(logits, target, valid, match):
    with pytest.raises(ValueError, match=match):
        bce_loss(logits, target, valid)
    with pytest.raises(ValueError, match=match):
        dice_loss(logits, target, valid)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bce": -1.0}, "bce must be >= 0"),
        ({"bce": 0.0, "dice": 0.0}, "at least one"),
        ({"smooth": 0.0}, "smooth"),
    ],
)
def test_bad_weights_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossWeights(**kwargs)
