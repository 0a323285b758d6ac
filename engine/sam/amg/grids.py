"""Where the automatic generator prompts: point grids and the crop boxes of each crop layer."""

import math
from itertools import product

import numpy as np


def build_point_grid(n_per_side: int) -> np.ndarray:
    """n_per_side**2 x 2 (x, y) cell centres of an even grid over [0, 1]^2, row by row."""
    if n_per_side < 1:
        raise ValueError(f"a point grid needs at least 1 point per side, got {n_per_side}")
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[np.ndarray]:
    """One grid per crop layer; layer i has int(n_per_side / scale_per_layer**i) per side."""
    return [
        build_point_grid(int(n_per_side / (scale_per_layer**layer)))
        for layer in range(n_layers + 1)
    ]


def _crop_length(full: int, n_crops: int, overlap: int) -> int:
    return math.ceil((overlap * (n_crops - 1) + full) / n_crops)


def generate_crop_boxes(
    im_size: tuple[int, ...], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (xyxy, pixels) and their layer: the whole image, then (2**i)**2 per layer i.

    Layer i >= 1 cuts the image into 2**i crops per side that overlap by
    `overlap_ratio * short_side * 2 / 2**i` pixels; boxes are listed column by column.
    """
    height, width = int(im_size[0]), int(im_size[1])
    boxes, layers = [[0, 0, width, height]], [0]
    short_side = min(height, width)
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = _crop_length(width, per_side, overlap)
        crop_h = _crop_length(height, per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layers.append(layer)
    return boxes, layers
