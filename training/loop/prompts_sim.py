"""Simulated prompts on ground-truth masks (paper, appendix A), batched and seeded.

Ground-truth masks are B x H x W bool tensors covering the whole (padded) model input frame at
any resolution: a mask pixel ``(row, col)`` is the input-frame point
``((col + 0.5) * img_size / W - 0.5, (row + 0.5) * img_size / H - 0.5)`` — its centre, in the
coordinates the prompt encoder takes (it adds 0.5 itself). All sampling draws from a
``torch.Generator`` on the masks' device, so a seed fixes every prompt.
"""

import torch
from torch import Tensor

BOX_NOISE_FRACTION = 0.1  # noise std as a fraction of the box side (paper: 10%)
BOX_NOISE_MAX = 20.0  # noise clipped to this many input-frame pixels (paper: 20 px)
NO_POINT = -1  # label of a padding point: the prompt encoder embeds it as "not a point"


def _check_masks(masks: Tensor) -> None:
    if masks.dim() != 3 or masks.dtype != torch.bool:
        raise ValueError(f"expected B x H x W bool masks, got {masks.dtype} {tuple(masks.shape)}")


def to_input_frame(rows_cols: Tensor, mask_size: tuple[int, int], img_size: int) -> Tensor:
    """Mask-pixel indices ... x 2 (row, col) -> input-frame points ... x 2 (x, y), float."""
    height, width = mask_size
    scale = torch.tensor(
        [img_size / width, img_size / height], device=rows_cols.device, dtype=torch.float32
    )
    return (rows_cols.flip(-1).to(torch.float32) + 0.5) * scale - 0.5


def sample_uniform(region: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One pixel drawn uniformly from each row's region: B x H x W bool -> (B x 2 long, B bool).

    Returns the (row, col) of the drawn pixel and whether the region had any pixel; rows with an
    empty region get (0, 0). Each pixel gets a uniform key, out-of-region keys are pushed below
    every in-region key, and the argmax is a uniform draw from the region.
    """
    _check_masks(region)
    batch, height, width = region.shape
    keys = torch.rand(
        (batch, height * width), generator=generator, device=region.device, dtype=torch.float32
    )
    flat = region.reshape(batch, -1)
    index = torch.where(flat, keys, torch.full_like(keys, -1.0)).argmax(dim=1)
    found = flat.any(dim=1)
    index = torch.where(found, index, torch.zeros_like(index))
    return torch.stack([index // width, index % width], dim=1), found


def positive_points(gt: Tensor, img_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A uniform foreground point per mask: gt B x H x W -> (coords B x 2 xy, labels B long).

    An empty mask gets a padding point (label -1) instead.
    """
    rows_cols, found = sample_uniform(gt, generator)
    labels = torch.where(found, 1, NO_POINT).to(torch.long)
    return to_input_frame(rows_cols, (gt.shape[1], gt.shape[2]), img_size), labels


def error_points(
    predicted: Tensor, gt: Tensor, img_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A uniform point from each error region: B x H x W bool twice -> (B x 2 xy, B long labels).

    False negatives (gt and not predicted) give a positive point (1), false positives a negative
    one (0); a row whose prediction is already exact gets a padding point (-1).
    """
    _check_masks(predicted)
    _check_masks(gt)
    rows_cols, found = sample_uniform(predicted ^ gt, generator)
    on_gt = gt[torch.arange(gt.shape[0], device=gt.device), rows_cols[:, 0], rows_cols[:, 1]]
    labels = torch.where(found, on_gt.to(torch.long), torch.full_like(rows_cols[:, 0], NO_POINT))
    return to_input_frame(rows_cols, (gt.shape[1], gt.shape[2]), img_size), labels


def mask_boxes(gt: Tensor, img_size: int) -> Tensor:
    """Tight boxes through the extreme pixels' centres: gt B x H x W -> B x 4 xyxy input frame.

    An empty mask gets a zero box.
    """
    _check_masks(gt)
    height, width = gt.shape[-2:]
    cols = torch.arange(width, device=gt.device)
    rows = torch.arange(height, device=gt.device)
    any_col, any_row = gt.any(dim=1), gt.any(dim=2)  # B x W, B x H
    big = max(height, width)
    col_min = torch.where(any_col, cols, big).amin(dim=1)
    col_max = torch.where(any_col, cols, -1).amax(dim=1)
    row_min = torch.where(any_row, rows, big).amin(dim=1)
    row_max = torch.where(any_row, rows, -1).amax(dim=1)
    top_left = to_input_frame(torch.stack([row_min, col_min], dim=1), (height, width), img_size)
    bottom_right = to_input_frame(torch.stack([row_max, col_max], dim=1), (height, width), img_size)
    boxes = torch.cat([top_left, bottom_right], dim=1)
    return torch.where(any_col.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def noisy_boxes(
    gt: Tensor,
    img_size: int,
    generator: torch.Generator,
    fraction: float = BOX_NOISE_FRACTION,
    max_noise: float = BOX_NOISE_MAX,
) -> Tensor:
    """Mask boxes with per-coordinate gaussian noise: gt B x H x W -> B x 4 xyxy input frame.

    Each coordinate moves by N(0, (fraction * side)^2) — the box width for x, height for y —
    clipped to +-max_noise input-frame pixels; the box is then clipped to the input frame and
    its corners re-ordered so that x0 <= x1 and y0 <= y1.
    """
    boxes = mask_boxes(gt, img_size)
    sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1)
    std = (fraction * sides).repeat(1, 2)  # x0, y0, x1, y1 -> w, h, w, h
    noise = torch.randn(boxes.shape, generator=generator, device=gt.device) * std
    noisy = (boxes + noise.clamp(-max_noise, max_noise)).clamp(0.0, float(img_size - 1))
    x0, x1 = torch.minimum(noisy[:, 0], noisy[:, 2]), torch.maximum(noisy[:, 0], noisy[:, 2])
    y0, y1 = torch.minimum(noisy[:, 1], noisy[:, 3]), torch.maximum(noisy[:, 1], noisy[:, 3])
    return torch.stack([x0, y0, x1, y1], dim=1)
