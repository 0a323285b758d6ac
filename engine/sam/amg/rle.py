"""Mask encodings of the generator's records: uncompressed RLE (column-major runs, starting
with a background run) and COCO's compressed RLE via pycocotools."""

from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """H x W bool -> {"size": [H, W], "counts": [runs...]}, runs over the column-major pixels,
    the first run counting background pixels (0 when the first pixel is foreground)."""
    height, width = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    counts = [0, *runs] if flat.size and flat[0] else runs
    return {"size": [height, width], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of `mask_to_rle`: H x W bool."""
    height, width = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    if flat.size != height * width:
        raise ValueError(
            f"RLE counts sum to {flat.size}, size {rle['size']} needs {height * width}"
        )
    return flat.reshape(width, height).T


def mask_to_coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """H x W bool -> COCO compressed RLE with `counts` as str (JSON-ready)."""
    encoded = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def encode_mask(mask: np.ndarray, output_mode: str) -> Any:
    """The record's `segmentation` for one H x W bool mask in `output_mode`."""
    if output_mode == "binary_mask":
        return mask
    if output_mode == "uncompressed_rle":
        return mask_to_rle(mask)
    if output_mode == "coco_rle":
        return mask_to_coco_rle(mask)
    raise ValueError(f"unknown output_mode {output_mode!r}; expected one of {OUTPUT_MODES}")
