"""The automatic stage's mask writer: one run's masks of one image, replaced in one go.

An automatic or prefill run (a ``Job``) writes every image's generator output through
:func:`masks_replace_for_run`. Rerunning an image (a redelivered chunk, a resumed run) deletes
what that run stored for the image before inserting, in the same transaction, so an image
never holds two sets of one run's masks.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction

from annotation.errors import InvalidMask
from annotation.models import Image, Mask
from annotation.services.masks import _common, _record_row
from engine.models import Job, ModelVersion

# The job kinds whose masks this writer stores ("prefill" once the engine defines it).
_RUN_KINDS = frozenset({"automatic", "prefill"})


def _check_run(*, job: Job, image: Image) -> None:
    if job.kind not in _RUN_KINDS:
        raise InvalidMask(
            f"job #{job.pk} is a {job.kind} job; only automatic or prefill runs write masks"
        )
    if job.project_id != image.project_id:
        raise InvalidMask(f"job #{job.pk} belongs to another project than image #{image.pk}")


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
    anything is written: a bad one raises InvalidMask naming its index and the image keeps
    the masks it had. Rerunning an image replaces its masks, never duplicates.
    """
    _check_run(job=job, image=image)
    fields = _common(
        image=image, source=source, stage=stage, status=status, model_version=model_version
    )
    rows: list[Mask] = []
    for index, record in enumerate(records):
        try:
            row = _record_row(record, image=image, fields=fields, annotator=None)
        except InvalidMask as exc:
            raise InvalidMask(f"image #{image.pk}, record {index}: {exc.message}") from exc
        row.job = job
        rows.append(row)
    Mask.objects.filter(job=job, image=image).delete()
    Mask.objects.bulk_create(rows, batch_size=1000)
    return len(rows)
