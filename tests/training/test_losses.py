"""Focal, dice and IoU losses; the lowest-loss candidate alone gets the mask gradient."""

import math

import pytest
import torch

from training.loop.losses import (
    candidate_loss,
    dice_loss,
    focal_loss,
    mask_iou,
    mask_loss,
)

BIG = 30.0  # a logit whose sigmoid is 1 (or 0) to float precision


def as_logits(values: list[list[float]]) -> torch.Tensor:
    """Rows of pixel logits -> 1 x C x 1 x P."""
    return torch.tensor(values, dtype=torch.float64).unsqueeze(0).unsqueeze(2)


def test_focal_loss_matches_hand_computation() -> None:
    # p = 0.5 everywhere: BCE = ln 2, (1 - p_t)^2 = 1/4, alpha_t = 0.25 (fg) / 0.75 (bg).
    target = torch.tensor([[[True, False]]])
    got = focal_loss(as_logits([[0.0, 0.0]]), target)
    assert got.shape == (1, 1)
    assert got.item() == pytest.approx((0.25 + 0.75) * 0.25 * math.log(2) / 2)
    # p = 0.75 on a foreground pixel: BCE = -ln 0.75, (1 - 0.75)^2 = 1/16, alpha 0.25.
    got = focal_loss(as_logits([[math.log(3.0)]]), torch.tensor([[[True]]]))
    assert got.item() == pytest.approx(0.25 * (1 / 16) * -math.log(0.75))
    # Without class weighting a background pixel at p = 0.75 costs (0.75)^2 * -ln 0.25.
    got = focal_loss(as_logits([[math.log(3.0)]]), torch.tensor([[[False]]]), alpha=-1)
    assert got.item() == pytest.approx(0.75**2 * -math.log(0.25))


def test_dice_loss_matches_hand_computation() -> None:
    target = torch.tensor([[[True, False]]])
    # p = 0.5, 0.5: overlap 0.5, sums 1 + 1 -> 1 - (2 * 0.5 + 1) / (2 + 1) = 1/3.
    assert dice_loss(as_logits([[0.0, 0.0]]), target).item() == pytest.approx(1 / 3)
    # Perfect and fully wrong predictions.
    assert dice_loss(as_logits([[BIG, -BIG]]), target).item() == pytest.approx(0.0, abs=1e-9)
    assert dice_loss(as_logits([[-BIG, BIG]]), target).item() == pytest.approx(2 / 3)
    # Empty prediction of an empty target is perfect thanks to the smoothing term.
    empty = torch.tensor([[[False, False]]])
    assert dice_loss(as_logits([[-BIG, -BIG]]), empty).item() == pytest.approx(0.0, abs=1e-9)


def test_mask_loss_weights_focal_twenty_to_one() -> None:
    logits = as_logits([[0.3, -1.2, 2.0], [1.0, 1.0, -1.0]])
    target = torch.tensor([[[True, False, True]]])
    expected = 20 * focal_loss(logits, target) + dice_loss(logits, target)
    assert torch.allclose(mask_loss(logits, target), expected)
    assert mask_loss(logits, target).shape == (1, 2)


def test_mask_iou_counts_thresholded_pixels() -> None:
    # Prediction covers pixels 0, 1; target covers 1, 2, 3 -> 1 / 4.
    logits = as_logits([[1.0, 0.5, -0.1, -2.0], [-1.0, -1.0, -1.0, -1.0]])
    target = torch.tensor([[[False, True, True, True]]])
    iou = mask_iou(logits, target)
    assert iou[0, 0].item() == pytest.approx(0.25)
    assert iou[0, 1].item() == 0.0
    empty = torch.zeros((1, 1, 4), dtype=torch.bool)
    assert mask_iou(logits[:, 1:], empty).item() == 1.0  # both empty: a perfect match
    assert mask_iou(logits[:, :1], empty).item() == 0.0


def test_only_the_lowest_loss_candidate_gets_mask_gradient() -> None:
    target = torch.zeros((2, 4, 4), dtype=torch.bool)
    target[:, 1:3, 1:3] = True
    good = torch.where(target, 5.0, -5.0)
    logits = torch.stack(
        [
            torch.stack([-good[0], good[0], torch.zeros(4, 4)]),  # row 0: candidate 1 is right
            torch.stack([torch.zeros(4, 4), -good[1], good[1]]),  # row 1: candidate 2 is right
        ]
    ).requires_grad_(True)
    iou_pred = torch.full((2, 3), 0.5, requires_grad=True)
    terms = candidate_loss(logits, iou_pred, target)
    assert terms.chosen.tolist() == [1, 2]
    terms.total.backward()
    assert logits.grad is not None
    assert iou_pred.grad is not None
    for row, chosen in enumerate([1, 2]):
        for candidate in range(3):
            grad = logits.grad[row, candidate]
            if candidate == chosen:
                assert grad.abs().sum() > 0
            else:
                assert torch.equal(grad, torch.zeros_like(grad))
    # The IoU head is trained on every candidate.
    assert (iou_pred.grad != 0).all()


def test_iou_loss_regresses_the_actual_iou() -> None:
    target = torch.zeros((1, 4, 4), dtype=torch.bool)
    target[0, :2] = True  # 8 pixels
    logits = torch.full((1, 2, 4, 4), -5.0)
    logits[0, 0, :2] = 5.0  # exact: IoU 1
    logits[0, 1, :1] = 5.0  # half: IoU 0.5
    iou_pred = torch.tensor([[1.0, 0.5]])
    terms = candidate_loss(logits, iou_pred, target)
    assert terms.actual_iou.tolist() == [[1.0, 0.5]]
    assert terms.iou.item() == pytest.approx(0.0)
    off = candidate_loss(logits, torch.tensor([[0.0, 0.0]]), target)
    assert off.iou.item() == pytest.approx((1.0 + 0.25) / 2)
    assert off.total.item() == pytest.approx(off.mask.item() + off.iou.item())
