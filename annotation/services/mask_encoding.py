"""Mask input checks: a COCO RLE, a binary array or a PNG against its image, then encoded;
and the checks of the other per-mask fields (numbers, lists, choices).

Every mask is stored in one canonical form: the compressed COCO RLE that pycocotools produces
for the decoded pixels (``counts`` as str), with ``area`` and ``bbox`` [x, y, w, h] computed by
pycocotools from that RLE. All RLE encoding and decoding is pycocotools'; this module only
checks the input's shape before handing it over, because pycocotools trusts its input.
"""

import base64
import binascii
import io
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image as PilImage
from pycocotools import mask as mask_utils

from annotation.errors import InvalidMask

# Grammar of pycocotools' compressed counts: each count is 0 to 6 continuation characters
# ('P'..'o', 6-bit values with the 0x20 bit set) closed by one final character ('0'..'O').
# Checked first because pycocotools' string parser reads past the end of a malformed string.
_COMPRESSED_COUNTS = re.compile(r"(?:[P-o]{0,6}[0-O])+")
_MAX_COUNT = 2**32 - 1


@dataclass(frozen=True)
class EncodedMask:
    """A non-empty mask in canonical compressed COCO RLE, with pycocotools' area and bbox."""

    counts: str
    area: int
    bbox: list[int]


def mask_encode(
    *, height: int, width: int, rle: object = None, binary: object = None, png: object = None
) -> EncodedMask:
    """Check exactly one of ``rle``/``binary``/``png`` against an HxW image and encode it.

    ``png`` is a base64 string of a 1-bit or 8-bit grey PNG of the image's size; every
    non-zero pixel is foreground. Raises InvalidMask when the input is bad or the mask empty.
    """
    if sum(value is not None for value in (rle, binary, png)) != 1:
        raise InvalidMask("give exactly one of rle, binary or png")
    if binary is not None:
        pixels = _binary_pixels(binary, height=height, width=width)
    elif png is not None:
        pixels = _png_pixels(png, height=height, width=width)
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


# As in annotation.imaging: Pillow's bomb warning is ignored process-wide (the size check below
# refuses what matters, and per-call catch_warnings is not thread-safe).
warnings.filterwarnings("ignore", category=PilImage.DecompressionBombWarning)


def _png_pixels(png: object, *, height: int, width: int) -> np.ndarray:
    """Decode a base64 PNG mask; its size is checked from the header before any pixel."""
    if not isinstance(png, str):
        raise InvalidMask(f"png must be a base64 string, got {type(png).__name__}")
    try:
        data = base64.b64decode(png, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidMask("png is not valid base64") from exc
    try:
        # Header only: a PNG of another size than the image (whose pixels are bounded at import)
        # is refused before any pixel is decoded, a bomb included.
        picture = PilImage.open(io.BytesIO(data), formats=["PNG"])
        if picture.size != (width, height):
            raise InvalidMask(
                f"png size {picture.size[0]}x{picture.size[1]} does not match the image "
                f"{width}x{height} (width x height)"
            )
        if picture.mode not in {"1", "L"}:
            raise InvalidMask(f"png must be 1-bit or 8-bit greyscale, not mode {picture.mode}")
        pixels = np.asarray(picture.convert("L"))
    except InvalidMask:
        raise
    except (OSError, ValueError, SyntaxError, PilImage.DecompressionBombError, Warning) as exc:
        raise InvalidMask(f"png cannot be read: {exc}") from exc
    return (pixels > 0).astype(np.uint8)


def check_rle_size(rle: Mapping[str, Any], *, height: int, width: int) -> None:
    """InvalidMask unless ``rle`` has ``counts`` and a ``size`` of exactly [height, width]."""
    if "size" not in rle or "counts" not in rle:
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


def _rle_pixels(rle: object, *, height: int, width: int) -> np.ndarray:
    """Decode a checked COCO RLE (compressed or uncompressed) to an HxW uint8 array."""
    if not isinstance(rle, Mapping):
        raise InvalidMask("rle must be a dict with 'size' [height, width] and 'counts'")
    check_rle_size(rle, height=height, width=width)
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


# --- checks of the other fields (InvalidMask naming the field) --------------------------------


def check_choice(value: str, *, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise InvalidMask(f"unknown {name} {value!r}; use one of: {', '.join(allowed)}")
    return value


def check_number(
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


def check_count(value: object, *, name: str, high: int) -> int:
    """A non-negative integer up to ``high`` (clicks, brush strokes); InvalidMask otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidMask(f"{name} must be a non-negative integer up to {high}, got {value!r}")
    return value


def check_number_list(value: object, *, name: str, length: int) -> list[float | int]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple) or len(value) != length:
        raise InvalidMask(f"{name} must be a list of {length} numbers, got {value!r}")
    numbers = []
    for item in value:
        number = check_number(item, name=name)
        if number is None:
            raise InvalidMask(f"{name} may not contain null")
        numbers.append(number)
    return numbers


def check_points(value: object) -> list[list[float | int]] | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise InvalidMask(f"point_coords must be a list of [x, y] pairs, got {value!r}")
    return [check_number_list(point, name="point_coords", length=2) for point in value]
