"""Boxes of masks, greedy box NMS (written here: no torchvision) and crop-edge filtering.

Boxes are xyxy with inclusive maxima, as the official generator computes them: a mask covering
columns 3..7 has x0 = 3, x1 = 7, so its COCO width x1 - x0 is 4.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

CROP_EDGE_TOLERANCE = 20.0


def masks_to_boxes(masks: Tensor) -> Tensor:
    """B x H x W bool -> B x 4 int64 xyxy (inclusive maxima); an empty mask gets [0, 0, 0, 0]."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    height, width = masks.shape[-2:]
    rows = masks.any(dim=-1)
    cols = masks.any(dim=-2)
    top = rows.int().argmax(dim=-1)
    bottom = height - 1 - rows.flip(-1).int().argmax(dim=-1)
    left = cols.int().argmax(dim=-1)
    right = width - 1 - cols.flip(-1).int().argmax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1).to(torch.int64)
    return boxes * rows.any(dim=-1, keepdim=True)


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, highest score first (ties keep input order).

    boxes N x 4 xyxy, scores N. A box is dropped when its IoU with a kept, better box is
    strictly above `iou_threshold`. Arithmetic is float32 as in torchvision's CPU kernel
    (area = (x1 - x0) * (y1 - y0)), so the same boxes are kept.
    """
    count = len(boxes)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    ordered = np.asarray(boxes, dtype=np.float32)[order]
    x0, y0, x1, y1 = ordered.T
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(count, dtype=bool)
    kept: list[int] = []
    for i in range(count):
        if suppressed[i]:
            continue
        kept.append(i)
        rest = slice(i + 1, None)
        width = np.maximum(np.float32(0), np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        height = np.maximum(
            np.float32(0), np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest])
        )
        inter = width * height
        with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 for empty boxes: NaN,
            iou = inter / (areas[i] + areas[rest] - inter)  # never above the threshold
        suppressed[rest] |= iou.astype(np.float64) > iou_threshold
    return order[np.array(kept, dtype=np.int64)]


def near_crop_edge(boxes: Tensor, crop_box: Sequence[int], image_box: Sequence[int]) -> Tensor:
    """B x 4 boxes in the crop's frame -> B bool: within 20 px of a crop edge that is not also
    an image edge (such masks are probably cut off by the crop)."""
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.as_tensor(image_box, dtype=torch.float32, device=boxes.device)
    offset = torch.as_tensor(
        [crop_box[0], crop_box[1], crop_box[0], crop_box[1]], device=boxes.device
    )
    uncropped = (boxes + offset).float()
    at_crop = (uncropped - crop).abs() <= CROP_EDGE_TOLERANCE
    at_image = (uncropped - image).abs() <= CROP_EDGE_TOLERANCE
    return (at_crop & ~at_image).any(dim=1)


def xyxy_to_xywh(box: Sequence[int]) -> list[int]:
    """[x0, y0, x1, y1] -> [x0, y0, x1 - x0, y1 - y0] (plain ints)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]
