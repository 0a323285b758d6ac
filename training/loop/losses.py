"""Mask and IoU losses of SAM's simulated interactive training (paper, appendix A).

Shapes: ``logits`` B x C x H x W (C candidate masks per ground truth), ``targets`` B x H x W
(bool or {0, 1} float). Every per-mask loss is a mean over that mask's pixels, so a loss does
not depend on the resolution it is computed at, only on the fractions of pixels involved.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor

FOCAL_WEIGHT = 20.0  # focal : dice = 20 : 1, as in the paper
DICE_WEIGHT = 1.0
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
DICE_SMOOTH = 1.0  # keeps dice finite (and 0) when prediction and target are both empty


def _as_float_target(logits: Tensor, targets: Tensor) -> Tensor:
    """targets B x H x W -> B x 1 x H x W in the logits' dtype, broadcasting over candidates."""
    if targets.shape[-2:] != logits.shape[-2:] or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets {tuple(targets.shape)} do not match logits {logits.shape}")
    return targets.to(logits.dtype).unsqueeze(1)


def focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA
) -> Tensor:
    """Sigmoid focal loss (Lin et al.) per mask: logits B x C x H x W, targets B x H x W -> B x C.

    Per pixel ``alpha_t * (1 - p_t) ** gamma * BCE`` with ``p_t`` the probability given to the
    true class, ``alpha_t = alpha`` on foreground and ``1 - alpha`` on background; averaged over
    the pixels of each mask. ``alpha < 0`` disables the class weighting.
    """
    target = _as_float_target(logits, targets)
    prob = torch.sigmoid(logits)
    bce = nnf.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = bce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.flatten(2).mean(dim=2)


def dice_loss(logits: Tensor, targets: Tensor, smooth: float = DICE_SMOOTH) -> Tensor:
    """Soft dice loss per mask: logits B x C x H x W, targets B x H x W -> B x C.

    ``1 - (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)`` with ``p = sigmoid(logits)``.
    """
    target = _as_float_target(logits, targets)
    prob = torch.sigmoid(logits).flatten(2)
    flat_target = target.flatten(2)
    overlap = (prob * flat_target).sum(dim=2)
    total = prob.sum(dim=2) + flat_target.sum(dim=2)
    return 1 - (2 * overlap + smooth) / (total + smooth)


def mask_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """The paper's mask loss, 20 * focal + dice, per mask: B x C x H x W, B x H x W -> B x C."""
    return FOCAL_WEIGHT * focal_loss(logits, targets) + DICE_WEIGHT * dice_loss(logits, targets)


@torch.no_grad()
def mask_iou(logits: Tensor, targets: Tensor, threshold: float = 0.0) -> Tensor:
    """IoU of each thresholded candidate with its target: B x C x H x W, B x H x W -> B x C.

    Two empty masks count as a perfect match (IoU 1). No gradient: it is a regression target.
    """
    predicted = (logits > threshold).flatten(2)
    target = targets.bool().unsqueeze(1).flatten(2)
    intersection = (predicted & target).sum(dim=2).to(logits.dtype)
    union = (predicted | target).sum(dim=2).to(logits.dtype)
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


@dataclass(frozen=True)
class CandidateLoss:
    """The loss of one prediction step for B ground-truth masks with C candidates each.

    total: scalar with grad (mean over the B masks); mask, iou: B (per-mask terms, with grad);
    chosen: B long, the index of the lowest-loss candidate; actual_iou: B x C, no grad.
    """

    total: Tensor
    mask: Tensor
    iou: Tensor
    chosen: Tensor
    actual_iou: Tensor


def candidate_loss(
    logits: Tensor, iou_predictions: Tensor, targets: Tensor, iou_weight: float = 1.0
) -> CandidateLoss:
    """Mask loss on the lowest-loss candidate only, plus MSE of every candidate's IoU prediction.

    logits: B x C x H x W, iou_predictions: B x C, targets: B x H x W. Only the chosen
    candidate's logits receive a gradient from the mask loss (the others are ambiguous answers
    the model must not be pushed away from); every IoU prediction regresses its candidate's
    actual IoU.
    """
    per_candidate = mask_loss(logits, targets)
    chosen = per_candidate.detach().argmin(dim=1)
    chosen_loss = per_candidate.gather(1, chosen.unsqueeze(1)).squeeze(1)
    actual = mask_iou(logits.detach(), targets)
    iou_loss = ((iou_predictions - actual) ** 2).mean(dim=1)
    total = (chosen_loss + iou_weight * iou_loss).mean()
    return CandidateLoss(
        total=total, mask=chosen_loss, iou=iou_loss, chosen=chosen, actual_iou=actual
    )
