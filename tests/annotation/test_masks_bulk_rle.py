"""The run-based RLE check gives mask_encode's result without decoding pixels."""

from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from annotation.errors import InvalidMask
from annotation.services.mask_encoding import mask_encode
from annotation.services.masks_bulk_rle import compressed_runs, rle_encode_from_runs

H, W = 37, 53


def _masks() -> list[np.ndarray]:
    """Random blobs with speckle, plus the corner cases of the first and last pixels."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:H, :W]
    masks = []
    for _ in range(60):
        cy, cx, r = rng.integers(0, H), rng.integers(0, W), rng.integers(1, 30)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8)
        mask[rng.integers(0, H, 8), rng.integers(0, W, 8)] ^= 1
        masks.append(mask)
    first, last, full = (np.zeros((H, W), np.uint8) for _ in range(3))
    first[0, 0] = 1
    last[-1, -1] = 1
    full[:] = 1
    return [m for m in [*masks, first, last, full] if m.any()]


def _compressed(mask: np.ndarray) -> dict[str, Any]:
    return mask_utils.encode(np.asfortranarray(mask))


def _runs_of(mask: np.ndarray) -> list[int]:
    flat = mask.ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


@pytest.mark.parametrize("index", range(len(_masks())))
def test_compressed_str_bytes_and_uncompressed_give_mask_encodes_result(index):
    mask = _masks()[index]
    rle = _compressed(mask)
    expected = mask_encode(height=H, width=W, binary=mask)
    for counts in (rle["counts"], rle["counts"].decode(), _runs_of(mask)):
        got = rle_encode_from_runs({"size": [H, W], "counts": counts}, height=H, width=W)
        assert got == expected


def test_runs_read_back_are_pycocotools_runs():
    for mask in _masks():
        runs = compressed_runs(_compressed(mask)["counts"].decode())
        assert runs.tolist() == _runs_of(mask)


def test_non_canonical_runs_are_left_to_the_general_path():
    # A zero-length run in the middle: the same pixels as [5, 3, ...] but not canonical.
    counts = [5, 0, 0, 3, H * W - 8]
    assert rle_encode_from_runs({"size": [H, W], "counts": counts}, height=H, width=W) is None
    assert rle_encode_from_runs({"size": [H, W], "counts": 12}, height=H, width=W) is None


def _short_counts() -> str:
    mask = np.zeros((H, W - 1), np.uint8)
    mask[3:9, 4:7] = 1
    return _compressed(mask)["counts"].decode()  # covers H*(W-1) pixels


def _long_counts() -> str:
    mask = np.zeros((H, W + 1), np.uint8)
    mask[3:9, 4:7] = 1
    return _compressed(mask)["counts"].decode()


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ({"counts": "PP"}, "must be a dict with 'size'"),
        ({"size": [H, W + 1], "counts": "PP"}, "does not match the image"),
        ({"size": [True, W], "counts": "PP"}, "two integers"),
        ({"size": [H, W], "counts": ""}, "empty"),
        ({"size": [H, W], "counts": "a b"}, "not a COCO compressed RLE string"),
        ({"size": [H, W], "counts": "é"}, "non-ASCII"),
        ({"size": [H, W], "counts": _short_counts()}, "cover fewer than"),
        ({"size": [H, W], "counts": _long_counts()}, "run past"),
        ({"size": [H, W], "counts": "0"}, "cover fewer than"),
        # One count of -1 (a final char with the sign bit): corrupt.
        ({"size": [H, W], "counts": "O"}, "run past"),
        ({"size": [H, W], "counts": [H * W]}, "empty"),
        ({"size": [H, W], "counts": []}, "empty"),
        ({"size": [H, W], "counts": [1, -1, H * W]}, "non-negative"),
        ({"size": [H, W], "counts": [1.5, H * W - 1.5]}, "non-negative integers, found 1.5"),
        ({"size": [H, W], "counts": [True, H * W - 1]}, "found True"),
        ({"size": [H, W], "counts": [1, 2]}, "sum to 3"),
    ],
)
def test_malformed_rle_is_refused_as_mask_encode_refuses_it(rle, message):
    with pytest.raises(InvalidMask, match=message):
        rle_encode_from_runs(rle, height=H, width=W)
    with pytest.raises(InvalidMask):
        mask_encode(height=H, width=W, rle=rle)
