"""One step of SAM's simulated interactive training on precomputed image embeddings.

The paper's schedule (appendix A), per ground-truth mask, 11 iterations:

- iteration 0: the first prompt, a uniform foreground point or (p = 0.5) the mask's box with
  noise; one prompt is ambiguous, so the three multimask candidates are decoded and the mask loss
  goes to the lowest-loss one;
- iterations 1..10: the previous iteration's chosen low-res logits (unthresholded, detached) are
  fed back as the mask prompt, and a point is drawn uniformly from the previous prediction's
  error region — except in two iterations that add no point: one intermediate iteration chosen
  at random and always the last. With several prompts the single-mask token answers.

Every iteration's loss (focal : dice = 20 : 1 plus IoU MSE, see ``losses``) is averaged. The
image encoder is not run here: embeddings come in, so what trains is the caller's choice.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor

from engine.sam.modeling import Sam
from engine.sam.modeling.mask_decoder import defer_shuffle_on
from training.loop.losses import candidate_loss
from training.loop.prompts_sim import error_points, noisy_boxes, positive_points

ITERATIONS = 11
BOX_PROBABILITY = 0.5


def point_schedule(generator: torch.Generator, iterations: int = ITERATIONS) -> list[bool]:
    """Whether each iteration adds a new prompt: iteration 0 always (the first prompt), the last
    and one random intermediate iteration never (with 11 iterations: 1 + 8 points, 2 without).
    """
    if iterations < 1:
        raise ValueError("at least one iteration is needed")
    adds = [True] * iterations
    if iterations >= 2:
        adds[-1] = False
    if iterations >= 3:
        pick = torch.randint(1, iterations - 1, (1,), generator=generator, device=generator.device)
        adds[int(pick.item())] = False
    return adds


@dataclass(frozen=True)
class InteractiveResult:
    """loss: scalar with grad (mean over iterations of the mean over masks);
    iteration_loss / iteration_iou: per iteration, the mean loss and the mean actual IoU of the
    chosen candidate (floats); adds_point: the schedule used; first_is_box: B bool.
    """

    loss: Tensor
    iteration_loss: list[float]
    iteration_iou: list[float]
    adds_point: list[bool]
    first_is_box: Tensor


@dataclass
class _Group:
    """Rows sharing a first-prompt kind, so their prompts stack: points G x K x 2, labels G x K,
    boxes G x 4 or None; rows: their indices in the batch (G long).
    """

    rows: Tensor
    coords: Tensor
    labels: Tensor
    boxes: Tensor | None


def _decode(
    model: Sam,
    embeddings: Tensor,
    group: _Group,
    mask_input: Tensor | None,
    multimask: bool,
) -> tuple[Tensor, Tensor]:
    """One decoder pass for a group -> low-res logits G x C x 4h x 4w and IoU predictions G x C."""
    points = (group.coords, group.labels) if group.coords.shape[1] > 0 else None
    rows = group.rows
    sparse, dense = model.prompt_encoder(
        points=points,
        boxes=group.boxes,
        masks=None if mask_input is None else mask_input[rows],
    )
    # One image for every mask: pass it once and let the decoder broadcast it (without a mask
    # prompt it then projects the image side once for all masks instead of once per mask).
    image = embeddings if embeddings.shape[0] == 1 else embeddings[rows]
    low_res, iou = model.mask_decoder(
        image_embeddings=image,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        deferred_shuffle=defer_shuffle_on(image.device),
    )
    return low_res, iou


def _first_prompts(
    gt: Tensor, img_size: int, generator: torch.Generator, box_probability: float
) -> tuple[list[_Group], Tensor]:
    """Split the batch into point-first and box-first groups with their first prompts."""
    batch = gt.shape[0]
    is_box = torch.rand((batch,), generator=generator, device=gt.device) < box_probability
    coords, labels = positive_points(gt, img_size, generator)
    boxes = noisy_boxes(gt, img_size, generator)
    groups = []
    point_rows = torch.nonzero(~is_box).squeeze(1)
    if point_rows.numel():
        groups.append(
            _Group(point_rows, coords[point_rows, None], labels[point_rows, None], boxes=None)
        )
    box_rows = torch.nonzero(is_box).squeeze(1)
    if box_rows.numel():
        empty = torch.zeros((box_rows.numel(), 0), dtype=torch.long, device=gt.device)
        groups.append(_Group(box_rows, coords.new_zeros((*empty.shape, 2)), empty, boxes[box_rows]))
    return groups, is_box


def _resolve_image_index(image_index: Tensor | None, images: int, masks: int) -> Tensor | None:
    if image_index is not None:
        if image_index.shape != (masks,):
            raise ValueError(f"image_index must have shape ({masks},)")
        return image_index
    if images in (1, masks):
        return None
    raise ValueError(f"{images} embeddings for {masks} masks: pass image_index")


def interactive_step(
    model: Sam,
    image_embeddings: Tensor,
    gt_masks: Tensor,
    *,
    generator: torch.Generator,
    image_index: Tensor | None = None,
    iterations: int = ITERATIONS,
    box_probability: float = BOX_PROBABILITY,
) -> InteractiveResult:
    """Simulate ``iterations`` rounds of interaction on every mask and return the mean loss.

    image_embeddings: N x C x h x w (the image encoder's output, e.g. 64 x 64 at 1024 input);
    gt_masks: B x H x W bool over the whole padded input frame (any resolution; losses and
    error regions are computed there, on bilinearly upsampled low-res logits);
    image_index: B long, the embedding of each mask (optional when N == B or N == 1);
    generator: on the model's device, draws every prompt and the schedule.
    """
    if gt_masks.dim() != 3 or gt_masks.dtype != torch.bool:
        raise ValueError("gt_masks must be B x H x W bool")
    batch = gt_masks.shape[0]
    index = _resolve_image_index(image_index, image_embeddings.shape[0], batch)
    # N x C x h x w, or 1 x C x h x w shared by every mask (not copied per mask).
    embeddings = image_embeddings[index] if index is not None else image_embeddings
    img_size = model.img_size
    adds_point = point_schedule(generator, iterations)
    groups, first_is_box = _first_prompts(gt_masks, img_size, generator, box_probability)
    order = torch.cat([group.rows for group in groups])
    restore = torch.argsort(order)

    mask_input: Tensor | None = None
    predicted = torch.zeros_like(gt_masks)  # replaced by iteration 0 before any sampling
    losses: list[Tensor] = []
    iteration_loss: list[float] = []
    iteration_iou: list[float] = []
    for step, adds in enumerate(adds_point):
        if step > 0 and adds:
            # Sample from the previous prediction's errors, computed below (same B row order).
            coords, labels = error_points(predicted, gt_masks, img_size, generator)
            for group in groups:
                group.coords = torch.cat([group.coords, coords[group.rows, None]], dim=1)
                group.labels = torch.cat([group.labels, labels[group.rows, None]], dim=1)
        decoded = [_decode(model, embeddings, g, mask_input, multimask=step == 0) for g in groups]
        low_res = torch.cat([logits for logits, _ in decoded])[restore]
        iou_pred = torch.cat([iou for _, iou in decoded])[restore]
        logits = nnf.interpolate(low_res, gt_masks.shape[-2:], mode="bilinear", align_corners=False)
        terms = candidate_loss(logits, iou_pred, gt_masks)
        losses.append(terms.total)
        chosen = terms.chosen[:, None, None, None]
        # The next iteration sees only the chosen answer, as an annotator would; no gradient
        # flows across iterations.
        mask_input = low_res.detach().gather(1, chosen.expand(-1, 1, *low_res.shape[-2:]))
        chosen_logits = logits.detach().gather(1, chosen.expand(-1, 1, *logits.shape[-2:]))
        predicted = chosen_logits[:, 0] > model.mask_threshold
        iteration_loss.append(float(terms.total.detach()))
        iteration_iou.append(float(terms.actual_iou.gather(1, terms.chosen[:, None]).mean()))
    return InteractiveResult(
        loss=torch.stack(losses).mean(),
        iteration_loss=iteration_loss,
        iteration_iou=iteration_iou,
        adds_point=adds_point,
        first_is_box=first_is_box,
    )
