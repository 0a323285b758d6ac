"""Mask writes: check a mask against its image (``mask_encoding``), then store it once.

``mask_create``/``masks_bulk_create`` are the general writers (automatic stage, imports,
scripts); ``mask_accept`` is an annotator accepting a mask in the tool, with its provenance
and the lease rule; ``mask_delete`` removes one.
"""

import datetime as dt
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from annotation.errors import ConflictError, InvalidMask
from annotation.models import Image, Mask, Stage
from annotation.permissions import REVIEWER, has_role
from annotation.services.categories import mask_category
from annotation.services.leases import lease_renew_for_accept
from annotation.services.mask_encoding import EncodedMask as EncodedMask  # re-exported
from annotation.services.mask_encoding import (
    check_choice,
    check_count,
    check_number,
    check_number_list,
    check_points,
    mask_encode,
)
from engine.models import ModelVersion

_IDEMPOTENCY_KEY_MAX = 100
# Counters are stored as PostgreSQL integers; seconds_spent of one accept is at most a day.
# Public: the accept API's serializer answers with the same bounds.
MAX_COUNT = 2**31 - 1
MAX_SECONDS = 86400.0

# A bulk record holds its mask under one of these keys, plus any of the optional fields that
# _extras() takes; "area" and "bbox" (as in SAM's generator records) are ignored: recomputed.
_RECORD_MASK_KEYS = {"rle", "binary", "segmentation"}
_RECORD_IGNORED = {"area", "bbox"}


# --- the other fields ------------------------------------------------------------------------


def _extras(
    *,
    predicted_iou: object = None,
    stability_score: object = None,
    point_coords: object = None,
    crop_box: object = None,
    prompts: object = None,
    seconds_spent: object = None,
    clicks: object = None,
    brush_strokes: object = None,
) -> dict[str, Any]:
    """The optional per-mask fields, checked; raises InvalidMask naming the bad one."""
    if prompts is not None and not isinstance(prompts, list | dict):
        raise InvalidMask(f"prompts must be a list or an object, got {type(prompts).__name__}")
    for name, count in (("clicks", clicks), ("brush_strokes", brush_strokes)):
        if count is not None:
            check_count(count, name=name, high=MAX_COUNT)
    return {
        "predicted_iou": check_number(predicted_iou, name="predicted_iou"),
        "stability_score": check_number(stability_score, name="stability_score", low=0.0, high=1.0),
        "point_coords": check_points(point_coords),
        "crop_box": (
            None if crop_box is None else check_number_list(crop_box, name="crop_box", length=4)
        ),
        "prompts": prompts if prompts is not None else [],
        "seconds_spent": check_number(seconds_spent, name="seconds_spent", low=0.0),
        "clicks": clicks,
        "brush_strokes": brush_strokes,
    }


_RECORD_FIELDS = frozenset(inspect.signature(_extras).parameters)


def _common(
    *,
    image: Image,
    source: str,
    stage: str | None,
    status: str,
    model_version: ModelVersion | None,
) -> dict[str, Any]:
    """Fields shared by every mask of one call: enums checked, stage defaulted."""
    if model_version is not None and model_version.project_id != image.project_id:
        raise InvalidMask(
            f"model version #{model_version.pk} belongs to another project than image #{image.pk}"
        )
    return {
        "image": image,
        "project_id": image.project_id,
        "source": check_choice(source, name="source", allowed=Mask.Source.values),
        "status": check_choice(status, name="status", allowed=Mask.Status.values),
        "stage": check_choice(
            stage if stage is not None else image.project.stage, name="stage", allowed=Stage.values
        ),
        "model_version": model_version,
    }


def _existing(idempotency_key: str, image: Image) -> Mask | None:
    mask = Mask.objects.filter(idempotency_key=idempotency_key).first()
    if mask is not None and mask.image_id != image.pk:
        raise ConflictError(
            f"idempotency key {idempotency_key!r} was already used for mask #{mask.pk} "
            f"on image #{mask.image_id}"
        )
    return mask


# --- services --------------------------------------------------------------------------------


@transaction.atomic
def mask_create(
    *,
    image: Image,
    rle: dict[str, Any] | None = None,
    binary: np.ndarray | None = None,
    png: str | None = None,
    source: str,
    stage: str | None = None,
    status: str = Mask.Status.ACCEPTED,
    annotator: User | None = None,
    model_version: ModelVersion | None = None,
    prompts: list[Any] | dict[str, Any] | None = None,
    seconds_spent: float | None = None,
    clicks: int | None = None,
    brush_strokes: int | None = None,
    predicted_iou: float | None = None,
    stability_score: float | None = None,
    point_coords: list[list[float]] | None = None,
    crop_box: list[float] | None = None,
    idempotency_key: str | None = None,
) -> Mask:
    """Store one mask on ``image``; a repeated ``idempotency_key`` returns the stored row.

    The mask is one of ``rle`` (COCO RLE dict), ``binary`` (HxW array) or ``png`` (base64).
    Raises InvalidMask (nothing written) for a malformed mask, an empty mask, an unknown
    source/stage/status or an out-of-range field.
    """
    if idempotency_key is not None:
        _check_key(idempotency_key)
        existing = _existing(idempotency_key, image)
        if existing is not None:
            return existing
    mask = _row(
        image=image,
        mask={"rle": rle, "binary": binary, "png": png},
        fields=_common(
            image=image, source=source, stage=stage, status=status, model_version=model_version
        ),
        extras=_extras(
            predicted_iou=predicted_iou,
            stability_score=stability_score,
            point_coords=point_coords,
            crop_box=crop_box,
            prompts=prompts,
            seconds_spent=seconds_spent,
            clicks=clicks,
            brush_strokes=brush_strokes,
        ),
        annotator=annotator,
        idempotency_key=idempotency_key,
    )
    return _insert(mask, image=image)[0]


def _check_key(idempotency_key: str) -> None:
    if not 0 < len(idempotency_key) <= _IDEMPOTENCY_KEY_MAX:
        raise InvalidMask(f"idempotency_key must be 1 to {_IDEMPOTENCY_KEY_MAX} characters")


def _row(
    *,
    image: Image,
    mask: dict[str, Any],
    fields: dict[str, Any],
    extras: dict[str, Any],
    annotator: User | None,
    idempotency_key: str | None = None,
) -> Mask:
    """An unsaved row: ``mask`` holds the pixels as one of rle/binary/png (the others None)."""
    encoded = mask_encode(height=image.height, width=image.width, **mask)
    return Mask(
        **fields,
        **extras,
        rle_counts=encoded.counts,
        area=encoded.area,
        bbox=encoded.bbox,
        annotator=annotator,
        idempotency_key=idempotency_key,
    )


def _insert(mask: Mask, *, image: Image) -> tuple[Mask, bool]:
    """Insert ``mask``; ``(stored row, False)`` when a concurrent request stored its key first."""
    try:
        with transaction.atomic():
            mask.save(force_insert=True)
            return mask, True
    except IntegrityError:
        key = mask.idempotency_key
        raced = _existing(key, image) if key is not None else None
        if raced is None:
            raise
        return raced, False


@transaction.atomic
def masks_bulk_create(
    *,
    image: Image,
    records: Sequence[Mapping[str, Any]],
    source: str,
    stage: str | None = None,
    status: str = Mask.Status.ACCEPTED,
    annotator: User | None = None,
    model_version: ModelVersion | None = None,
    batch_size: int = 1000,
) -> list[Mask]:
    """Store many masks of one image at once (automatic stage, benchmarks); all or nothing.

    Each record holds the mask as ``rle`` (COCO RLE dict), ``binary`` (HxW array) or
    ``segmentation`` (either, as in SAM's generator output), plus optional ``predicted_iou``,
    ``stability_score``, ``point_coords``, ``crop_box``, ``prompts``, ``seconds_spent``,
    ``clicks``. Every record is checked before anything is written; a bad one raises
    InvalidMask naming its index.
    """
    fields = _common(
        image=image, source=source, stage=stage, status=status, model_version=model_version
    )
    rows: list[Mask] = []
    for index, record in enumerate(records):
        try:
            rows.append(_record_row(record, image=image, fields=fields, annotator=annotator))
        except InvalidMask as exc:
            raise InvalidMask(f"record {index}: {exc.message}") from exc
    return Mask.objects.bulk_create(rows, batch_size=batch_size)


def _record_row(
    record: Mapping[str, Any],
    *,
    image: Image,
    fields: dict[str, Any],
    annotator: User | None,
) -> Mask:
    if not isinstance(record, Mapping):
        raise InvalidMask(f"a record must be a dict, got {type(record).__name__}")
    unknown = set(record) - _RECORD_FIELDS - _RECORD_MASK_KEYS - _RECORD_IGNORED
    if unknown:
        raise InvalidMask(f"unknown record keys: {', '.join(sorted(unknown))}")
    given = [key for key in _RECORD_MASK_KEYS if record.get(key) is not None]
    if len(given) != 1:
        raise InvalidMask("a record needs exactly one of rle, binary or segmentation")
    value = record[given[0]]
    as_binary = given[0] == "binary" or (
        given[0] == "segmentation" and isinstance(value, np.ndarray)
    )
    return _row(
        image=image,
        mask={"rle": None if as_binary else value, "binary": value if as_binary else None},
        fields=fields,
        extras=_extras(**{key: record.get(key) for key in _RECORD_FIELDS}),
        annotator=annotator,
    )


# --- the annotation tool ---------------------------------------------------------------------

ACCEPT_SOURCES = (Mask.Source.ASSISTED.value, Mask.Source.MANUAL.value)


def _project_version(*, image: Image, model_version_id: int | None) -> ModelVersion | None:
    """The model version an accept names. One of another project is refused; an id that no
    longer exists (deleted while the annotator worked) is stored as null, as the mask's
    ``SET_NULL`` would have done had it been stored a moment earlier."""
    if model_version_id is None:
        return None
    version = ModelVersion.objects.filter(pk=model_version_id).first()
    if version is None:
        return None
    if version.project_id != image.project_id:
        raise InvalidMask(
            f"model version #{model_version_id} is not a model version of this image's project"
        )
    return version


@transaction.atomic
def mask_accept(
    *,
    image: Image,
    annotator: User,
    rle: dict[str, Any] | None = None,
    png: str | None = None,
    source: str,
    model_version_id: int | None = None,
    prompts: dict[str, Any] | list[Any] | None = None,
    clicks: int | None = None,
    brush_strokes: int | None = None,
    seconds_spent: float | None = None,
    idempotency_key: str | None = None,
    category_id: int | None = None,
    now: dt.datetime | None = None,
) -> tuple[Mask, bool]:
    """An annotator accepts a mask drawn in the tool; returns ``(mask, created)``.

    Provenance: stage = the project's stage, ``source`` (assisted when model prompts were
    used, manual when drawn only), the model version, the annotator, the prompts, clicks,
    brush strokes and the active seconds the client measured (0 to 86400), and the optional
    ``category_id`` (a category of the project, else InvalidCategory). A repeated
    ``idempotency_key`` of the same annotator returns the stored row with ``created`` False.
    Lease rule: see :func:`lease_renew_for_accept` (LeaseExpired: nothing stored).
    """
    if idempotency_key is not None:
        _check_key(idempotency_key)
        stored = _existing(idempotency_key, image)
        if stored is not None:
            return _own(stored, annotator=annotator), False
    check_choice(source, name="source", allowed=ACCEPT_SOURCES)
    check_number(seconds_spent, name="seconds_spent", low=0.0, high=MAX_SECONDS)
    mask = _row(
        image=image,
        mask={"rle": rle, "png": png},
        fields=_common(
            image=image,
            source=source,
            stage=None,  # the project's stage
            status=Mask.Status.ACCEPTED,
            model_version=_project_version(image=image, model_version_id=model_version_id),
        ),
        extras=_extras(
            prompts=prompts,
            seconds_spent=seconds_spent,
            clicks=clicks,
            brush_strokes=brush_strokes,
        ),
        annotator=annotator,
        idempotency_key=idempotency_key,
    )
    mask.category = mask_category(project_id=image.project_id, category_id=category_id)
    # Checked last: a bad mask is refused without touching the lease.
    lease_renew_for_accept(image=image, user=annotator, now=now)
    stored, created = _insert(mask, image=image)
    return _own(stored, annotator=annotator), created


def _own(mask: Mask, *, annotator: User) -> Mask:
    """A retried accept finds its own row; another annotator's key is a conflict."""
    if mask.annotator_id != annotator.pk:
        raise ConflictError(
            f"idempotency key {mask.idempotency_key!r} was already used by another annotator"
        )
    return mask


def require_owner_or_reviewer(*, mask: Mask, user: User, action: str) -> None:
    """PermissionDenied (403) unless ``user`` made ``mask`` or reviews or administers its
    project; ``action`` names what was refused ("delete", "edit")."""
    if mask.annotator_id != user.pk and not has_role(
        user=user, project=mask.project, role=REVIEWER
    ):
        raise PermissionDenied(f"only the mask's annotator or a reviewer may {action} it")


@transaction.atomic
def mask_delete(*, mask: Mask, user: User) -> None:
    """Delete a mask: its own annotator, or a reviewer or admin of its project (else 403)."""
    require_owner_or_reviewer(mask=mask, user=user, action="delete")
    mask.delete()
