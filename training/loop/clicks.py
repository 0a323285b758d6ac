"""The evaluation protocol's simulated clicks (SAM paper §7.1, following RITM).

The first click goes to the interior point of the ground-truth mask farthest from its boundary;
every next click goes to the point of the current error farthest from that error's boundary.
False negatives (gt, not predicted) and false positives (predicted, not gt) are measured
separately — a false-negative pixel next to a false-positive one is on the boundary of both —
and the click lands in the one whose deepest point is deeper, positive for a false negative.

Distances are Euclidean, to the nearest pixel outside the region, with the image border
counting as boundary (the region is padded with one row / column of background first). Ties
are broken deterministically: the first pixel in row-major order wins, and a false negative wins
over an equally deep false positive.
"""

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage  # type: ignore[import-untyped]

BoolMask = NDArray[np.bool_]


def _check_mask(name: str, mask: object) -> BoolMask:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 2:
        got = f"{mask.dtype} {mask.shape}" if isinstance(mask, np.ndarray) else type(mask)
        raise ValueError(f"{name} must be an H x W bool array, got {got}")
    return mask


def deepest_point(region: BoolMask) -> tuple[int, int, float] | None:
    """(row, col, distance) of the region pixel farthest from the region's boundary.

    region: H x W bool. Returns None for an empty region. The distance transform runs on the
    region's bounding box padded by one background pixel, which gives every region pixel the
    same distance as the whole padded image would: the nearest outside pixel is never farther
    than the padding ring, and the ring is background.
    """
    row_any = region.any(axis=1)
    if not row_any.any():
        return None
    rows = np.flatnonzero(row_any)
    cols = np.flatnonzero(region.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    crop = np.pad(region[top : int(rows[-1]) + 1, left : int(cols[-1]) + 1], 1)
    distance = ndimage.distance_transform_edt(crop)
    # argmax returns the first maximum in row-major order: the deterministic tie-break.
    row, col = divmod(int(np.argmax(distance)), distance.shape[1])
    return top + row - 1, left + col - 1, float(distance[row, col])


def next_click(predicted: BoolMask | None, gt: BoolMask) -> tuple[int, int, bool] | None:
    """(x, y, positive): the next click of the protocol, in pixel coordinates of `gt`.

    predicted: H x W bool, the current mask, or None before the first click (the click then
    goes to the interior point of `gt` farthest from its boundary, always positive);
    gt: H x W bool. Returns None when there is nothing to click: an empty `gt` before the first
    click, or a prediction equal to `gt`.
    """
    gt = _check_mask("gt", gt)
    if predicted is None:
        inside = deepest_point(gt)
        return None if inside is None else (inside[1], inside[0], True)
    predicted = _check_mask("predicted", predicted)
    if predicted.shape != gt.shape:
        raise ValueError(f"predicted {predicted.shape} and gt {gt.shape} differ in shape")
    missed = deepest_point(gt & ~predicted)
    extra = deepest_point(predicted & ~gt)
    if missed is not None and (extra is None or missed[2] >= extra[2]):
        return missed[1], missed[0], True
    if extra is not None:
        return extra[1], extra[0], False
    return None
