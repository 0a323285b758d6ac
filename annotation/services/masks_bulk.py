"""The automatic stage's mask writer: one run's masks of one image, replaced in one go.

An automatic or prefill run (a ``Job``) writes every image's generator output through
:func:`masks_replace_for_run`. Rerunning an image (a redelivered chunk, a resumed run) deletes
what that run stored for the image before inserting, in the same transaction, so an image
never holds two sets of one run's masks.

Written for volume (hundreds of masks per image, millions of images), without giving up the
checks of ``mask_encoding``:
- a compressed RLE is checked and canonicalised from its runs (:mod:`masks_bulk_rle`), not by
  decoding every pixel of the image and encoding them again (0.4 ms instead of ~25 ms for a
  1500 x 2250 image); the stored counts, area and bbox are the same as ``mask_encode``'s;
- on PostgreSQL the rows go in with one ``COPY`` on the transaction's connection instead of
  multi-row ``INSERT`` statements (``bench/mask_insert.py`` measures both).
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from annotation.errors import InvalidMask
from annotation.models import Image, Mask, Stage
from annotation.services.mask_encoding import (
    EncodedMask,
    check_choice,
    check_number,
    check_number_list,
    check_points,
    mask_encode,
)
from annotation.services.masks_bulk_rle import rle_encode_from_runs
from engine.models import Job, ModelVersion

# The job kinds whose masks this writer stores.
_RUN_KINDS = frozenset({Job.Kind.AUTOMATIC.value, Job.Kind.PREFILL.value})
# A generator record (SamAutomaticMaskGenerator's output); "area" and "bbox" are recomputed
# from the pixels, so a record's own values cannot disagree with its mask.
_RECORD_KEYS = frozenset(
    {"segmentation", "area", "bbox", "predicted_iou", "stability_score", "point_coords", "crop_box"}
)


@dataclass(frozen=True)
class _Row:
    """One checked record: the canonical mask and its scores, ready for either writer."""

    mask: EncodedMask
    predicted_iou: float | int | None
    stability_score: float | int | None
    point_coords: list[list[float | int]] | None
    crop_box: list[float | int] | None


# --- checks ----------------------------------------------------------------------------------


def _check_run(*, job: Job, image: Image, model_version: ModelVersion | None) -> None:
    if job.kind not in _RUN_KINDS:
        raise InvalidMask(
            f"job #{job.pk} is a {job.kind} job; only automatic or prefill runs write masks"
        )
    if job.project_id != image.project_id:
        raise InvalidMask(f"job #{job.pk} belongs to another project than image #{image.pk}")
    if model_version is not None and model_version.project_id != image.project_id:
        raise InvalidMask(
            f"model version #{model_version.pk} belongs to another project than image #{image.pk}"
        )


def _segmentation(value: object, *, height: int, width: int) -> EncodedMask:
    """A record's mask (COCO RLE dict or HxW binary array) in canonical form."""
    if isinstance(value, np.ndarray):
        return mask_encode(height=height, width=width, binary=value)
    if isinstance(value, Mapping):
        fast = rle_encode_from_runs(value, height=height, width=width)
        if fast is not None:
            return fast
    # Anything else (or an RLE that is not canonical): the general, pixel-wise path.
    return mask_encode(height=height, width=width, rle=value)


def _record_row(record: object, *, height: int, width: int) -> _Row:
    if not isinstance(record, Mapping):
        raise InvalidMask(f"a record must be a dict, got {type(record).__name__}")
    unknown = set(record) - _RECORD_KEYS
    if unknown:
        raise InvalidMask(f"unknown record keys: {', '.join(sorted(map(str, unknown)))}")
    if record.get("segmentation") is None:
        raise InvalidMask("a record needs a segmentation (COCO RLE or binary mask)")
    crop_box = record.get("crop_box")
    return _Row(
        mask=_segmentation(record["segmentation"], height=height, width=width),
        predicted_iou=check_number(record.get("predicted_iou"), name="predicted_iou"),
        stability_score=check_number(
            record.get("stability_score"), name="stability_score", low=0.0, high=1.0
        ),
        point_coords=check_points(record.get("point_coords")),
        crop_box=None
        if crop_box is None
        else check_number_list(crop_box, name="crop_box", length=4),
    )


# --- the two writers -------------------------------------------------------------------------

# Columns COPY fills; every other column of the table is nullable and stays NULL, as it does
# for a Mask saved by the ORM with those fields unset. tests/annotation/test_masks_bulk.py
# compares a COPY row with an ORM row field by field, so a new NOT NULL column shows there.
_COPY_FIELDS = (
    "project",
    "image",
    "job",
    "model_version",
    "stage",
    "source",
    "status",
    "rle_counts",
    "bbox",
    "area",
    "predicted_iou",
    "stability_score",
    "point_coords",
    "crop_box",
    "prompts",
    "rejection_reason",
    "edit_count",
    "created_at",
    "updated_at",
)


def _use_copy() -> bool:
    return connection.vendor == "postgresql"


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def _insert_copy(rows: Sequence[_Row], *, common: Mapping[str, Any]) -> None:
    """``COPY annotation_mask (...) FROM STDIN`` on the current transaction's connection."""
    quote = connection.ops.quote_name
    column = {field.name: field.column for field in Mask._meta.concrete_fields}
    columns = ", ".join(quote(str(column[name])) for name in _COPY_FIELDS)
    sql = f"COPY {quote(Mask._meta.db_table)} ({columns}) FROM STDIN"
    now = timezone.now()
    head = (
        common["project_id"],
        common["image_id"],
        common["job_id"],
        common["model_version_id"],
        common["stage"],
        common["source"],
        common["status"],
    )
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(
                (
                    *head,
                    row.mask.counts,
                    json.dumps(row.mask.bbox),
                    row.mask.area,
                    row.predicted_iou,
                    row.stability_score,
                    _json(row.point_coords),
                    _json(row.crop_box),
                    "[]",
                    "",
                    0,
                    now,
                    now,
                )
            )


def _insert_orm(rows: Sequence[_Row], *, common: Mapping[str, Any]) -> None:
    """``bulk_create``: the writer on databases without COPY (SQLite in development)."""
    Mask.objects.bulk_create(
        [
            Mask(
                **common,
                rle_counts=row.mask.counts,
                bbox=row.mask.bbox,
                area=row.mask.area,
                predicted_iou=row.predicted_iou,
                stability_score=row.stability_score,
                point_coords=row.point_coords,
                crop_box=row.crop_box,
            )
            for row in rows
        ],
        batch_size=1000,
    )


# --- the service -----------------------------------------------------------------------------


@transaction.atomic
def masks_replace_for_run(
    *,
    job: Job,
    image: Image,
    records: Sequence[Mapping[str, Any]],
    source: str,
    status: str,
    stage: str,
    model_version: ModelVersion | None,
) -> int:
    """In one transaction: delete the masks of (job, image), insert `records`, return the count.

    ``records`` are generator records: ``segmentation`` as a COCO RLE dict (compressed counts
    as str or bytes, or uncompressed counts) or an HxW binary array, with ``bbox``, ``area``
    (both recomputed from the pixels), ``predicted_iou``, ``stability_score``,
    ``point_coords`` [[x, y]] and ``crop_box`` [x, y, w, h]. Every record is checked before
    anything is written: a bad one raises InvalidMask naming the image and the record's index,
    and the image keeps the masks it had. Rerunning an image replaces its masks, never
    duplicates.
    """
    _check_run(job=job, image=image, model_version=model_version)
    common = {
        "project_id": image.project_id,
        "image_id": image.pk,
        "job_id": job.pk,
        "model_version_id": None if model_version is None else model_version.pk,
        "stage": check_choice(stage, name="stage", allowed=Stage.values),
        "source": check_choice(source, name="source", allowed=Mask.Source.values),
        "status": check_choice(status, name="status", allowed=Mask.Status.values),
    }
    rows: list[_Row] = []
    for index, record in enumerate(records):
        try:
            rows.append(_record_row(record, height=image.height, width=image.width))
        except InvalidMask as exc:
            raise InvalidMask(f"image #{image.pk}, record {index}: {exc.message}") from exc
    # No relation points at a mask, so this is one DELETE using the (job, image) index.
    Mask.objects.filter(job=job, image=image).delete()
    if rows:
        (_insert_copy if _use_copy() else _insert_orm)(rows, common=common)
    return len(rows)
