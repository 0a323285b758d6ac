"""Boundary validation of predictor inputs: every rejection is a ValueError naming the value.

Decisions (the official package checks none of these and fails deep in torch or answers
silently):
- images: uint8, H x W (grayscale, replicated to RGB), H x W x 1, H x W x 3, or H x W x 4 (alpha
  dropped); any side >= 1 px.
- points: N x 2 finite (x, y) pixel coordinates with 0 <= x <= W and 0 <= y <= H (a point off
  the image is a client bug, not a prompt); labels N values in {0, 1}; N >= 1.
- box: 4 finite values x0, y0, x1, y1 inside the image with x1 >= x0 and y1 >= y0.
- mask_input: 1 x 256 x 256 (or 256 x 256) finite low-resolution logits.
- at least one of points, box, mask_input.
"""

import numpy as np


def as_rgb_uint8(image: np.ndarray, image_format: str) -> np.ndarray:
    """A validated H x W x 3 uint8 RGB view of `image` given in `image_format` (RGB or BGR)."""
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be H x W, H x W x 1, 3 or 4, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    if image.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(image, 3, axis=2))
    image = image[:, :, :3]
    if image_format == "BGR":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def _finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values: {array.tolist()}")


def _as_float_array(name: str, value: object) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not numeric: {value!r}") from exc


def check_points(
    point_coords: object, point_labels: object, original_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """N x 2 float coords and N int labels, validated against the original (H, W)."""
    if point_labels is None:
        raise ValueError("point_labels must be given with point_coords")
    coords = _as_float_array("point_coords", point_coords)
    labels = _as_float_array("point_labels", point_labels)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        raise ValueError(f"point_coords must be N x 2 with N >= 1, got shape {coords.shape}")
    if labels.shape != (coords.shape[0],):
        raise ValueError(
            f"point_labels must have shape ({coords.shape[0]},), got shape {labels.shape}"
        )
    _finite("point_coords", coords)
    _finite("point_labels", labels)
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError(
            f"point_labels must be 0 (background) or 1 (foreground): {labels.tolist()}"
        )
    height, width = original_size
    outside = (
        (coords[:, 0] < 0) | (coords[:, 0] > width) | (coords[:, 1] < 0) | (coords[:, 1] > height)
    )
    if np.any(outside):
        raise ValueError(f"points outside the {width} x {height} image: {coords[outside].tolist()}")
    return coords, labels.astype(np.int64)


def check_box(box: object, original_size: tuple[int, int]) -> np.ndarray:
    """A 1 x 4 xyxy box validated against the original (H, W)."""
    array = _as_float_array("box", box)
    if array.shape not in ((4,), (1, 4)):
        raise ValueError(f"box must be 4 values x0, y0, x1, y1, got shape {array.shape}")
    array = array.reshape(1, 4)
    _finite("box", array)
    x0, y0, x1, y1 = array[0].tolist()
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box must have x1 >= x0 and y1 >= y0, got {array[0].tolist()}")
    height, width = original_size
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(f"box {array[0].tolist()} is outside the {width} x {height} image")
    return array


def check_mask_input(mask_input: object, low_res_size: tuple[int, int]) -> np.ndarray:
    """A 1 x h x w float32 array of low-resolution logits (h x w = 256 x 256 for SAM)."""
    array = _as_float_array("mask_input", mask_input)
    if array.shape == low_res_size:
        array = array[None]
    if array.shape != (1, *low_res_size):
        raise ValueError(
            f"mask_input must be 1 x {low_res_size[0]} x {low_res_size[1]}, got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("mask_input contains NaN or infinite values")
    return array.astype(np.float32)
