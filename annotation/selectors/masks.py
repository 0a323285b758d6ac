"""Mask reads for exports and snapshots: plain ``values()`` rows in a stable order.

The exporter streams these with ``.iterator(chunk_size=...)`` (a server-side cursor on
PostgreSQL), so memory stays flat however many masks a project holds.
"""

from collections.abc import Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any, TypedDict, Unpack

from django.db.models import Exists, F, OuterRef, QuerySet

from annotation.models import Image, Mask, Project

EXPORT_MASK_FIELDS = (
    "id",
    "image_id",
    "rle_counts",
    "bbox",
    "area",
    "stage",
    "source",
    "predicted_iou",
    "stability_score",
    "point_coords",
    "crop_box",
    "category_id",
)
EXPORT_IMAGE_FIELDS = ("id", "width", "height", "file_name", "sha256", "blob_key", "format")


def usable_masks(*, project: Project, status: str) -> QuerySet[Mask]:
    """``project``'s masks in ``status``, but not those of skipped images: set aside as
    unusable, they stay out of exports, training rounds and review until the image is reopened."""
    return Mask.objects.filter(project=project, status=status).exclude(
        image__status=Image.Status.SKIPPED
    )


class MaskFilters(TypedDict, total=False):
    """What an export selects, besides the project: the masks in ``status`` (default
    accepted), of one ``stage`` or ``source``, written by one automatic or prefill run
    (``job_id``), only those a reviewer approved or fixed (``reviewed``), or only those of
    some categories (``category_ids``)."""

    status: str
    stage: str | None
    source: str | None
    job_id: int | None
    reviewed: bool
    category_ids: list[int] | None


def _filtered_masks(*, project: Project, **filters: Unpack[MaskFilters]) -> QuerySet[Mask]:
    masks = usable_masks(project=project, status=filters.get("status", Mask.Status.ACCEPTED))
    job_id = filters.get("job_id")
    if job_id is not None:
        masks = masks.filter(job_id=job_id)  # the masks one automatic or prefill run wrote
    stage, source = filters.get("stage"), filters.get("source")
    if stage is not None:
        masks = masks.filter(stage=stage)
    if source is not None:
        masks = masks.filter(source=source)
    if filters.get("reviewed"):
        masks = masks.filter(reviewed_at__isnull=False)  # approved or fixed by a reviewer
    category_ids = filters.get("category_ids")
    if category_ids is not None:
        masks = masks.filter(category_id__in=category_ids)
    return masks


def masks_for_export(
    *, project: Project, **filters: Unpack[MaskFilters]
) -> QuerySet[Mask, dict[str, Any]]:
    """The selected masks as dict rows (``EXPORT_MASK_FIELDS`` plus the image's ``height`` and
    ``width``, which an RLE's size needs), in id order."""
    return (
        _filtered_masks(project=project, **filters)
        .order_by("id")
        .values(*EXPORT_MASK_FIELDS, height=F("image__height"), width=F("image__width"))
    )


def images_for_export(
    *, project: Project, **filters: Unpack[MaskFilters]
) -> QuerySet[Image, dict[str, Any]]:
    """Images holding at least one selected mask, as dict rows (``EXPORT_IMAGE_FIELDS``), in id
    order."""
    selected = _filtered_masks(project=project, **filters)
    return (
        Image.objects.filter(project=project)
        .filter(Exists(selected.filter(image_id=OuterRef("pk"))))
        .order_by("id")
        .values(*EXPORT_IMAGE_FIELDS)
    )


def mask_groups_for_export(
    *, project: Project, chunk_size: int = 2000, **filters: Unpack[MaskFilters]
) -> Iterator[tuple[dict[str, Any], Iterator[dict[str, Any]]]]:
    """``(image row, its mask rows)`` per image holding selected masks, images in id order and
    masks in id order within each image.

    One streamed query ordered by (image, id): each group's masks are consumed lazily, so only
    one image's rows are in flight. Consume each group before moving to the next.
    """
    image_keys = ["image_id", *(f"image__{name}" for name in EXPORT_IMAGE_FIELDS[1:])]
    rows = (
        _filtered_masks(project=project, **filters)
        .order_by("image_id", "id")
        .values(*EXPORT_MASK_FIELDS, *image_keys[1:])
        .iterator(chunk_size=chunk_size)
    )
    # The image's own fields depend on image_id alone, so grouping on all of them together
    # groups by image and hands over the image row without peeking at the masks.
    for image_values, group in groupby(rows, key=itemgetter(*image_keys)):
        yield (
            dict(zip(EXPORT_IMAGE_FIELDS, image_values, strict=True)),
            _mask_rows(group, image_keys[1:]),
        )


def _mask_rows(rows: Iterator[dict[str, Any]], image_keys: list[str]) -> Iterator[dict[str, Any]]:
    for row in rows:
        for key in image_keys:
            del row[key]
        yield row


def export_has_uncategorized(*, project: Project, **filters: Unpack[MaskFilters]) -> bool:
    """Whether any selected mask has no category (a COCO export then lists a class-agnostic
    category for them)."""
    return _filtered_masks(project=project, **filters).filter(category__isnull=True).exists()


def export_counts(*, project: Project, **filters: Unpack[MaskFilters]) -> tuple[int, int]:
    """``(images, masks)`` that an export with these filters will hold."""
    return (
        images_for_export(project=project, **filters).count(),
        _filtered_masks(project=project, **filters).count(),
    )
