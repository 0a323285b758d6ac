"""Mask writes: check a COCO RLE or a binary mask against its image, then store it once.

Every mask is stored in one canonical form: the compressed COCO RLE that pycocotools produces
for the decoded pixels (``counts`` as str), with ``area`` and ``bbox`` [x, y, w, h] computed by
pycocotools from that RLE. All RLE encoding and decoding is pycocotools'; this module only
checks the input's shape before handing it over, because pycocotools trusts its input.
"""

import inspect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from pycocotools import mask as mask_utils

from annotation.errors import ConflictError, InvalidMask
from annotation.models import Image, Mask, Stage
from engine.models import ModelVersion

# Grammar of pycocotools' compressed counts: each count is 0 to 6 continuation characters
# ('P'..'o', 6-bit values with the 0x20 bit set) closed by one final character ('0'..'O').
# Checked first because pycocotools' string parser reads past the end of a malformed string.
_COMPRESSED_COUNTS = re.compile(r"(?:[P-o]{0,6}[0-O])+")
_MAX_COUNT = 2**32 - 1
_IDEMPOTENCY_KEY_MAX = 100

# A bulk record holds its mask under one of these keys, plus any of the optional fields that
# _extras() takes; "area" and "bbox" (as in SAM's generator records) are ignored: recomputed.
_RECORD_MASK_KEYS = {"rle", "binary", "segmentation"}
_RECORD_IGNORED = {"area", "bbox"}


@dataclass(frozen=True)
class EncodedMask:
    """A non-empty mask in canonical compressed COCO RLE, with pycocotools' area and bbox."""

    counts: str
    area: int
    bbox: list[int]


def mask_encode(
    *, height: int, width: int, rle: object = None, binary: object = None
) -> EncodedMask:
    """Check exactly one of ``rle``/``binary`` against an HxW image; raise InvalidMask if bad."""
    if (rle is None) == (binary is None):
        raise InvalidMask("give exactly one of rle or binary")
    if binary is not None:
        pixels = _binary_pixels(binary, height=height, width=width)
    else:
        pixels = _rle_pixels(rle, height=height, width=width)
    encoded = mask_utils.encode(np.asfortranarray(pixels, dtype=np.uint8))
    area = int(mask_utils.area(encoded))
    if area == 0:
        raise InvalidMask("the mask is empty: it has no foreground pixel")
    bbox = [int(v) for v in mask_utils.toBbox(encoded)]
    return EncodedMask(counts=encoded["counts"].decode("ascii"), area=area, bbox=bbox)


def _binary_pixels(binary: object, *, height: int, width: int) -> np.ndarray:
    if not isinstance(binary, np.ndarray):
        raise InvalidMask(f"binary must be a numpy array, got {type(binary).__name__}")
    if binary.shape != (height, width):
        raise InvalidMask(
            f"binary mask shape {tuple(binary.shape)} does not match the image "
            f"(height, width) = ({height}, {width})"
        )
    if binary.dtype == np.bool_:
        return binary
    if binary.dtype != np.uint8:
        raise InvalidMask(f"binary mask dtype must be bool or uint8, got {binary.dtype}")
    if binary.size and int(binary.max()) > 1:
        raise InvalidMask("a uint8 binary mask may only hold 0 and 1")
    return binary


def _rle_pixels(rle: object, *, height: int, width: int) -> np.ndarray:
    """Decode a checked COCO RLE (compressed or uncompressed) to an HxW uint8 array."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise InvalidMask("rle must be a dict with 'size' [height, width] and 'counts'")
    size = rle["size"]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise InvalidMask(f"rle size must be [height, width] as two integers, got {size!r}")
    if list(size) != [height, width]:
        raise InvalidMask(
            f"rle size {list(size)} does not match the image [height, width] = [{height}, {width}]"
        )
    counts = rle["counts"]
    if isinstance(counts, list):
        _check_uncompressed(counts, pixels=height * width)
        compressed = mask_utils.frPyObjects(
            {"size": [height, width], "counts": counts}, height, width
        )
        return mask_utils.decode(compressed)
    if isinstance(counts, bytes | str):
        return _decode_compressed(counts, height=height, width=width)
    raise InvalidMask(
        f"rle counts must be a str, bytes or a list of ints, not {type(counts).__name__}"
    )


def _check_uncompressed(counts: list[Any], *, pixels: int) -> None:
    if not counts:
        raise InvalidMask("rle counts are empty")
    for count in counts:
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= _MAX_COUNT:
            raise InvalidMask(f"rle counts must be non-negative integers, found {count!r}")
    total = sum(counts)
    if total != pixels:
        raise InvalidMask(f"rle counts sum to {total}, expected height*width = {pixels}")


def _decode_compressed(counts: bytes | str, *, height: int, width: int) -> np.ndarray:
    try:
        text = counts.decode("ascii") if isinstance(counts, bytes) else counts
        raw = text.encode("ascii")
    except UnicodeError as exc:
        raise InvalidMask(
            "rle counts hold non-ASCII characters: not a COCO compressed RLE"
        ) from exc
    if not raw:
        raise InvalidMask("rle counts are empty")
    if not _COMPRESSED_COUNTS.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidMask(f"rle counts {shown!r} are not a COCO compressed RLE string")
    pixels = height * width
    # pycocotools refuses to decode counts that run past the canvas and leaves the rest of the
    # canvas undefined when they stop short. Counts that fill the canvas exactly therefore do
    # not fit one pixel less: decoding onto h*w - 1 pixels must fail.
    try:
        mask_utils.decode({"size": [1, pixels - 1], "counts": raw})
    except ValueError:
        pass
    else:
        raise InvalidMask(f"rle counts cover fewer than height*width = {pixels} pixels")
    try:
        return mask_utils.decode({"size": [height, width], "counts": raw})
    except ValueError as exc:
        raise InvalidMask(
            f"rle counts run past height*width = {pixels} pixels or are corrupt"
        ) from exc


# --- the other fields ------------------------------------------------------------------------


def _choice(value: str, *, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise InvalidMask(f"unknown {name} {value!r}; use one of: {', '.join(allowed)}")
    return value


def _optional_number(
    value: object, *, name: str, low: float | None = None, high: float | None = None
) -> float | int | None:
    """None, or a finite number within [low, high]; integers stay integers."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise InvalidMask(f"{name} must be a number, got {value!r}")
    number: float | int = int(value) if isinstance(value, int | np.integer) else float(value)
    if not math.isfinite(number):
        raise InvalidMask(f"{name} must be finite, got {value!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise InvalidMask(f"{name} must lie in [{low}, {high}], got {value!r}")
    return number


def _number_list(value: object, *, name: str, length: int) -> list[float | int]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple) or len(value) != length:
        raise InvalidMask(f"{name} must be a list of {length} numbers, got {value!r}")
    numbers = []
    for item in value:
        number = _optional_number(item, name=name)
        if number is None:
            raise InvalidMask(f"{name} may not contain null")
        numbers.append(number)
    return numbers


def _point_coords(value: object) -> list[list[float | int]] | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise InvalidMask(f"point_coords must be a list of [x, y] pairs, got {value!r}")
    return [_number_list(point, name="point_coords", length=2) for point in value]


def _extras(
    *,
    predicted_iou: object = None,
    stability_score: object = None,
    point_coords: object = None,
    crop_box: object = None,
    prompts: object = None,
    seconds_spent: object = None,
    clicks: object = None,
) -> dict[str, Any]:
    """The optional per-mask fields, checked; raises InvalidMask naming the bad one."""
    if prompts is not None and not isinstance(prompts, list):
        raise InvalidMask(f"prompts must be a list, got {type(prompts).__name__}")
    if clicks is not None and (
        isinstance(clicks, bool) or not isinstance(clicks, int) or clicks < 0
    ):
        raise InvalidMask(f"clicks must be a non-negative integer, got {clicks!r}")
    return {
        "predicted_iou": _optional_number(predicted_iou, name="predicted_iou"),
        "stability_score": _optional_number(
            stability_score, name="stability_score", low=0.0, high=1.0
        ),
        "point_coords": _point_coords(point_coords),
        "crop_box": None if crop_box is None else _number_list(crop_box, name="crop_box", length=4),
        "prompts": prompts if prompts is not None else [],
        "seconds_spent": _optional_number(seconds_spent, name="seconds_spent", low=0.0),
        "clicks": clicks,
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
        "source": _choice(source, name="source", allowed=Mask.Source.values),
        "status": _choice(status, name="status", allowed=Mask.Status.values),
        "stage": _choice(
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
    source: str,
    stage: str | None = None,
    status: str = Mask.Status.ACCEPTED,
    annotator: User | None = None,
    model_version: ModelVersion | None = None,
    prompts: list[Any] | None = None,
    seconds_spent: float | None = None,
    clicks: int | None = None,
    predicted_iou: float | None = None,
    stability_score: float | None = None,
    point_coords: list[list[float]] | None = None,
    crop_box: list[float] | None = None,
    idempotency_key: str | None = None,
) -> Mask:
    """Store one mask on ``image``; a repeated ``idempotency_key`` returns the stored row.

    Raises InvalidMask (nothing written) for a malformed RLE or binary mask, an empty mask, an
    unknown source/stage/status or an out-of-range field.
    """
    if idempotency_key is not None:
        if not 0 < len(idempotency_key) <= _IDEMPOTENCY_KEY_MAX:
            raise InvalidMask(f"idempotency_key must be 1 to {_IDEMPOTENCY_KEY_MAX} characters")
        existing = _existing(idempotency_key, image)
        if existing is not None:
            return existing
    fields = _common(
        image=image, source=source, stage=stage, status=status, model_version=model_version
    )
    extras = _extras(
        predicted_iou=predicted_iou,
        stability_score=stability_score,
        point_coords=point_coords,
        crop_box=crop_box,
        prompts=prompts,
        seconds_spent=seconds_spent,
        clicks=clicks,
    )
    encoded = mask_encode(height=image.height, width=image.width, rle=rle, binary=binary)
    try:
        with transaction.atomic():
            return Mask.objects.create(
                **fields,
                **extras,
                rle_counts=encoded.counts,
                area=encoded.area,
                bbox=encoded.bbox,
                annotator=annotator,
                idempotency_key=idempotency_key,
            )
    except IntegrityError:
        # Another request stored the same key between our check and our insert.
        raced = _existing(idempotency_key, image) if idempotency_key is not None else None
        if raced is None:
            raise
        return raced


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
    encoded = mask_encode(
        height=image.height,
        width=image.width,
        rle=None if as_binary else value,
        binary=value if as_binary else None,
    )
    extras = _extras(**{key: record.get(key) for key in _RECORD_FIELDS})
    return Mask(
        **fields,
        **extras,
        rle_counts=encoded.counts,
        area=encoded.area,
        bbox=encoded.bbox,
        annotator=annotator,
    )
