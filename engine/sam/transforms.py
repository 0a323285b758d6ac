"""Resize an image so its longest side is the model input size, and move prompts with it.

`apply_image` resizes with Pillow's bilinear filter (which antialiases when shrinking), the
resize the official package reaches through torchvision's `to_pil_image` + `resize`, so the
pixels fed to the encoder are identical. The `*_torch` variants work on batched tensors.
"""

from copy import deepcopy

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image
from torch import Tensor


class ResizeLongestSide:
    """Scale by `target_length / max(h, w)`; new sides round half up (`int(x * scale + 0.5)`)."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """(h, w) after resizing; a side never rounds to 0 (a 1 x 5000 image keeps 1 row)."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        newh = max(1, int(oldh * scale + 0.5))
        neww = max(1, int(oldw * scale + 0.5))
        return newh, neww

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 -> h x w x 3 uint8 with max(h, w) = target_length."""
        newh, neww = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        resized = Image.fromarray(image).resize((neww, newh), Image.Resampling.BILINEAR)
        return np.array(resized)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """... x 2 (x, y) in the original image -> float64 coordinates in the resized one."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = deepcopy(coords).astype(float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """B x 4 xyxy boxes -> B x 4 in the resized image."""
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: Tensor) -> Tensor:
        """B x C x H x W float -> resized with antialiased bilinear interpolation.

        Close to, but not bit-identical with, `apply_image` (which the model was trained with).
        """
        target = self.get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return nnf.interpolate(image, target, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: Tensor, original_size: tuple[int, ...]) -> Tensor:
        """... x 2 (x, y) tensor -> float tensor in the resized frame."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = deepcopy(coords).to(torch.float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(self, boxes: Tensor, original_size: tuple[int, ...]) -> Tensor:
        """B x 4 xyxy tensor -> B x 4 in the resized frame."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
