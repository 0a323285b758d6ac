"""What a round trains and is evaluated on: mask id snapshots and the samples built from them.

A snapshot is a sorted list of inclusive id ranges ``[[first, last], ...]``: masks accepted in
id order (the usual case) collapse to a handful of ranges, so 100,000 masks cost a few bytes
instead of a 700 kB JSON list, and a range is read back with one indexed ``BETWEEN`` query.
Every id inside a range is in the snapshot (ranges are built from consecutive ids only).
"""

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from annotation.errors import ImageRejected
from annotation.imaging import load_rgb_array
from annotation.models import Image, Mask, Project
from storage.blobs import get_blob_store
from training.loop.data import TrainSample

IdRanges = list[list[int]]

_RANGES_PER_QUERY = 500


def ids_to_ranges(ids: Iterable[int]) -> IdRanges:
    """Sorted distinct ids -> inclusive ranges; ``[1, 2, 3, 7]`` -> ``[[1, 3], [7, 7]]``."""
    ranges: IdRanges = []
    for value in ids:
        if ranges and value == ranges[-1][1] + 1:
            ranges[-1][1] = value
        elif ranges and value <= ranges[-1][1]:
            raise ValueError(f"ids must be sorted and distinct; {value} after {ranges[-1][1]}")
        else:
            ranges.append([value, value])
    return ranges


def ranges_count(ranges: Sequence[Sequence[int]]) -> int:
    return sum(last - first + 1 for first, last in ranges)


def ranges_to_ids(ranges: Sequence[Sequence[int]]) -> Iterator[int]:
    for first, last in ranges:
        yield from range(first, last + 1)


def snapshot_masks(
    *, project: Project, ranges: Sequence[Sequence[int]], include_rejected: bool = False
) -> Iterator[Mask]:
    """The snapshot's masks still present (and, by default, not rejected since), in id order."""
    for start in range(0, len(ranges), _RANGES_PER_QUERY):
        chunk = ranges[start : start + _RANGES_PER_QUERY]
        query = Mask.objects.none()
        for first, last in chunk:
            query = query | Mask.objects.filter(project=project, id__gte=first, id__lte=last)
        if not include_rejected:
            query = query.exclude(status=Mask.Status.REJECTED)
        yield from query.only("id", "image_id", "rle_counts").order_by("id").iterator(2000)


def samples_from_masks(masks: Iterable[Mask]) -> list[TrainSample]:
    """One TrainSample per image (key: the image's sha256) holding its masks decoded from RLE.

    Masks are grouped by image in the order their images first appear; an image blob that no
    longer decodes raises (the round fails with the reason rather than training on less).
    """
    by_image: dict[int, list[str]] = {}
    for mask in masks:
        by_image.setdefault(mask.image_id, []).append(mask.rle_counts)
    images = Image.objects.in_bulk(list(by_image))
    store = get_blob_store()
    samples: list[TrainSample] = []
    for image_id, counts in by_image.items():
        image = images[image_id]
        try:
            pixels = load_rgb_array(store.get_bytes(image.blob_key))
        except (ImageRejected, OSError, ValueError) as exc:  # PIL: OSError subclasses
            raise ValueError(
                f"image {image.pk} ({image.file_name or image.sha256[:12]}): its stored file no "
                f"longer decodes ({type(exc).__name__})"
            ) from exc
        if pixels.shape[:2] != (image.height, image.width):
            raise ValueError(
                f"image {image.pk}: stored pixels are {pixels.shape[1]}x{pixels.shape[0]}, the "
                f"row says {image.width}x{image.height}"
            )
        decoded = tuple(
            mask_utils.decode(
                {"size": [image.height, image.width], "counts": value.encode("ascii")}
            ).astype(np.bool_)
            for value in counts
        )
        samples.append(TrainSample(key=image.sha256, image=pixels, masks=decoded))
    return samples
