"""A COCO annotation's segmentation (compressed or uncompressed RLE, or polygons) as the
canonical compressed RLE of a maskloop mask, checked against its image."""

from collections.abc import Mapping

import numpy as np
from pycocotools import mask as mask_utils

from annotation.errors import InvalidMask
from annotation.models import Image
from annotation.services.mask_encoding import EncodedMask, mask_encode
from annotation.services.masks_bulk_rle import rle_encode_from_runs

# The polygons of one annotation may have edges (in L-infinity length) of at most this many
# times the image's height + width: a detailed outline is a few times that.
MAX_EDGE_FACTOR = 100


def segmentation_encoded(value: object, *, image: Image) -> EncodedMask:
    """A COCO segmentation (RLE or polygons) as the canonical mask, or InvalidMask."""
    height, width = image.height, image.width
    if isinstance(value, Mapping):
        fast = rle_encode_from_runs(value, height=height, width=width)
        return fast if fast is not None else mask_encode(height=height, width=width, rle=value)
    if not isinstance(value, list) or not value:
        raise InvalidMask("segmentation must be an RLE object or a non-empty list of polygons")
    polygons = [_polygon(polygon, height=height, width=width) for polygon in value]
    # pycocotools rasterises along every edge: bound that work for a hostile file.
    length = sum(float(np.abs(np.diff(p, axis=0)).max(axis=1).sum()) for p in polygons)
    if length > MAX_EDGE_FACTOR * (height + width):
        raise InvalidMask(f"the polygons' edges are {length:.0f} px long: not a mask outline")
    rle = mask_utils.merge(mask_utils.frPyObjects(value, height, width))
    counts = rle["counts"].decode("ascii")
    fast = rle_encode_from_runs(
        {"size": [height, width], "counts": counts}, height=height, width=width
    )
    if fast is None:
        return mask_encode(
            height=height, width=width, rle={"size": [height, width], "counts": counts}
        )
    return fast


def _polygon(value: object, *, height: int, width: int) -> np.ndarray:
    """One polygon as N x 2 (x, y) float64, closed, checked to lie in the image (a pixel of
    slack for outlines drawn on pixel edges)."""
    if (
        not isinstance(value, list)
        or len(value) < 6
        or len(value) % 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise InvalidMask("each polygon must be a list of at least 3 x, y pairs of numbers")
    points = np.asarray(value, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise InvalidMask("a polygon has a NaN or infinite coordinate")
    if not ((points >= -1).all() and (points <= [width + 1, height + 1]).all()):
        raise InvalidMask(f"a polygon has points outside the {width} x {height} image")
    return np.vstack([points, points[:1]])
