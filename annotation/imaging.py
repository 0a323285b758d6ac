"""Image bytes → facts, pixels and thumbnails. Pure Pillow + numpy: no database, no settings.

Decisions made here, once for the whole platform:

* Accepted formats are JPEG, PNG, WebP and TIFF. A JPEG that Pillow reads as MPO (the
  multi-picture JPEG phones write: a primary image plus previews or depth maps) is a JPEG; its
  primary image is the one used.
* Animated PNG/WebP and multi-page TIFF are refused: which frame the masks belong to would be
  ambiguous, and browsers would animate what the model sees as a still.
* The pixel limit is checked from the header, before any pixel is decoded. Pillow's own
  decompression-bomb guard stays on: its warning (above ``PIL.Image.MAX_IMAGE_PIXELS``) is left
  to our limit, its error (above twice that, ~179 Mpx by default) refuses the file as well, so
  a limit configured above ~179 Mpx is capped there.
* Every accepted image is fully decoded once at inspection, so a truncated or corrupt file is
  refused at the door instead of failing later in a worker.
* EXIF orientation is applied exactly once, in :func:`load_rgb`; ``ImageInfo.width/height``
  are the oriented size, i.e. what the model and the annotation tool see.
* Transparency is composited on white (not dropped): a transparent background then looks the
  same in the browser, the thumbnail and the model input.
"""

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from annotation.errors import ImageRejected

ACCEPTED_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}
# The file name extensions a saved copy may keep for each format (the first is added otherwise).
_EXTENSIONS = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "TIFF": (".tif", ".tiff"),
}
# Pillow's name for a format → the name we store (MPO is a JPEG with extra pictures).
_FORMAT_ALIASES = {"MPO": "JPEG"}
# Pillow opens only these plugins; anything else is named for the message, never decoded.
_OPEN_FORMATS = ["JPEG", "PNG", "WEBP", "TIFF"]  # a JPEG with MP data opens as MPO

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa"}
_PLAIN_MODES = {"RGB", "1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_WIDE_MODES = {"I", "F"}
_SUPPORTED_MODES = _ALPHA_MODES | _PLAIN_MODES | _WIDE_MODES

_ORIENTATION_TAG = 0x0112
# EXIF orientation → the transpose that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_MAX_NAME_LENGTH = 255
_WHITE = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What ingestion stores about an accepted image."""

    format: str  # JPEG, PNG, WEBP or TIFF
    width: int  # after EXIF orientation
    height: int  # after EXIF orientation
    sha256: str  # of the original bytes
    byte_size: int
    mode: str  # Pillow pixel mode of the original, e.g. RGB, L, CMYK, I;16

    @property
    def content_type(self) -> str:
        return ACCEPTED_FORMATS[self.format]


def _reject(file_name: str, reason: str) -> ImageRejected:
    return ImageRejected(
        f"{file_name}: {reason}", details={"file_name": file_name, "reason": reason}
    )


def safe_file_name(name: str) -> str:
    """The base name to store for an uploaded or imported file; refuses unsafe names.

    Refused (:class:`ImageRejected`): empty names, NUL or other control characters,
    backslashes, absolute paths (``/x``, ``C:x``) and any ``.`` or ``..`` segment. A relative
    path such as ``cats/001.jpg`` is fine and stored as ``001.jpg``.
    """
    shown = repr(name)
    if not name or not name.strip():
        raise ImageRejected(
            "empty file name", details={"file_name": name, "reason": "empty file name"}
        )
    reason = ""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        reason = "contains NUL or control characters"
    elif "\\" in name:
        reason = "contains a backslash"
    elif name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        reason = "is an absolute path"
    elif any(part in {".", ".."} for part in name.split("/")):
        reason = "contains a '.' or '..' path segment (path traversal)"
    base = name.rsplit("/", 1)[-1]
    if not reason and not base.strip():
        reason = "has no file name after the last '/'"
    elif not reason and len(base) > _MAX_NAME_LENGTH:
        reason = f"is longer than {_MAX_NAME_LENGTH} characters"
    if reason:
        raise ImageRejected(
            f"unsafe file name {shown}: {reason}",
            details={"file_name": name, "reason": f"unsafe file name: {reason}"},
        )
    return base


def download_name(file_name: str, fmt: str) -> str:
    """The name to offer a browser for an image's bytes: ``file_name`` when its extension fits
    the format, else with the format's extension added (``poly.html`` -> ``poly.html.png``), so
    a saved copy never opens as another kind of file than it is."""
    extensions = _EXTENSIONS.get(fmt)
    if not extensions or file_name.lower().endswith(extensions):
        return file_name
    return f"{file_name}{extensions[0]}"


def _orientation(image: Image.Image) -> int:
    """EXIF orientation 1-8; 1 when absent or unreadable (a broken EXIF block is not fatal)."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # malformed metadata must not refuse decodable pixels
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


# Pillow's bomb *warning* is left to our limit, checked from the header: ignored process-wide.
# (warnings.catch_warnings around each open is not thread-safe: with import_images' threads,
# one thread's restored filters let another's warning through to the console.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _open(data: bytes) -> Image.Image:
    """Open lazily with only the accepted plugins."""
    return Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)


def _identify_other(data: bytes) -> str | None:
    """The format name Pillow would give bytes we refuse, for the message (header only)."""
    try:
        with Image.open(io.BytesIO(data)) as other:
            return other.format
    except Exception:  # anything unreadable is simply "not an image"
        return None


def inspect_image(data: bytes, *, file_name: str, max_pixels: int, max_bytes: int) -> ImageInfo:
    """Validate ``data`` as an image we accept and describe it; :class:`ImageRejected` if not.

    Checks, in order: empty, over ``max_bytes``, identifiable, accepted format, pixel count
    (``width * height`` from the header) against ``max_pixels``, single frame, pixel mode,
    then a full decode (truncated or corrupt data is refused).
    """
    size = len(data)
    if size == 0:
        raise _reject(file_name, "empty file (0 bytes)")
    if size > max_bytes:
        raise _reject(file_name, f"file is {size} bytes, over the limit of {max_bytes} bytes")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone switched Pillow to pad truncated files with grey; ingestion must not do that.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False for ingestion")
    try:
        image = _open(data)
    except Image.DecompressionBombError as exc:
        # Pillow's hard guard (2 x PIL.Image.MAX_IMAGE_PIXELS) fires while reading the header.
        raise _reject(
            file_name,
            f"possible decompression bomb refused from its header, not decoded ({exc})",
        ) from exc
    except Exception as exc:  # any failure to read a header means "not ours"
        other = _identify_other(data)
        if other is not None:
            reason = f"unsupported format {other} (accepted: JPEG, PNG, WebP, TIFF)"
        else:
            reason = "not an image (no JPEG, PNG, WebP or TIFF header could be read)"
        raise _reject(file_name, reason) from exc
    with image:
        fmt = _FORMAT_ALIASES.get(image.format or "", image.format or "")
        if fmt not in ACCEPTED_FORMATS:
            raise _reject(file_name, f"unsupported format {image.format}")
        width, height = image.size
        if width <= 0 or height <= 0:
            raise _reject(file_name, f"invalid size {width}x{height}")
        if width * height > max_pixels:
            raise _reject(
                file_name,
                f"{width}x{height} = {width * height} pixels is over the limit of "
                f"{max_pixels} pixels (possible decompression bomb); not decoded",
            )
        frames = _frame_count(image, file_name)
        if frames > 1 and image.format != "MPO":
            raise _reject(
                file_name,
                f"animated or multi-page {fmt} with {frames} frames; "
                "save the frame to annotate as a single image",
            )
        if image.mode not in _SUPPORTED_MODES and not image.mode.startswith("I;16"):
            raise _reject(file_name, f"unsupported pixel mode {image.mode}")
        try:
            image.load()
        except Exception as exc:  # decoders raise many types on corrupt input
            raise _reject(file_name, f"truncated or corrupt {fmt} data ({exc})") from exc
        mode = image.mode
        if _orientation(image) in {5, 6, 7, 8}:
            width, height = height, width
    return ImageInfo(
        format=fmt,
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        byte_size=size,
        mode=mode,
    )


def _frame_count(image: Image.Image, file_name: str) -> int:
    try:
        return int(getattr(image, "n_frames", 1))
    except Exception as exc:  # a broken frame table is corrupt data
        raise _reject(file_name, f"corrupt frame table ({exc})") from exc


def _wide_to_l(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit int and float grey → 8-bit grey.

    ``I;16*`` use the full 16-bit range (÷257). ``I`` and ``F`` keep values already in
    0-255 (``F`` in 0-1 is scaled by 255), ``I`` in 0-65535 is treated as 16-bit, and anything
    else is stretched from its minimum to its maximum.
    """
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        scaled = values / 257.0
    elif image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    elif image.mode == "I" and low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    else:
        scaled = (values - low) * (255.0 / (high - low))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _WIDE_MODES or mode.startswith("I;16"):
        return _wide_to_l(image).convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _load_upright_rgb(data: bytes, *, draft: tuple[int, int] | None = None) -> Image.Image:
    with _open(data) as image:
        if draft is not None and image.format in {"JPEG", "MPO"}:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers ``draft``.
            image.draft("RGB", draft)
        image.load()
        transpose = _TRANSPOSE.get(_orientation(image))
        upright = image.transpose(transpose) if transpose is not None else image
        rgb = _to_rgb(upright)
        return rgb.copy() if rgb is image else rgb


def load_rgb(data: bytes) -> Image.Image:
    """The image as the model and the tool see it: upright (EXIF applied once), mode RGB.

    Alpha is composited on white; 16-bit and float greys are scaled to 8 bits (see
    :func:`_wide_to_l`); CMYK, palette, 1-bit and grey become RGB through Pillow. Expects bytes
    that :func:`inspect_image` accepted.
    """
    return _load_upright_rgb(data)


def load_rgb_array(data: bytes) -> np.ndarray:
    """``H x W x 3`` uint8 RGB array of :func:`load_rgb`, C-contiguous and writable."""
    array = np.array(load_rgb(data), dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected H x W x 3 RGB, got shape {array.shape}")
    return array


# Pixels a browser draws exactly as load_rgb decodes them: 8-bit grey, RGB or palette, without
# transparency. Anything else (16-bit grey, CMYK, alpha) goes through load_rgb's conversions.
_BROWSER_SAFE_MODES = {"1", "L", "P", "RGB"}


def browser_draws_as_decoded(data: bytes) -> bool:
    """Whether a browser shows these original bytes exactly as :func:`load_rgb` does, so the
    annotation tool can draw them as they are (header only, no pixels decoded).

    Not so for TIFF (browsers do not decode it), for the pixel modes :func:`load_rgb` converts
    (16-bit or float grey, CMYK, transparency), and for an EXIF orientation outside JPEG
    (Chromium ignores it in WebP, which would put every click off the model's pixels).
    """
    with _open(data) as image:
        fmt = _FORMAT_ALIASES.get(image.format or "", image.format or "")
        if fmt not in {"JPEG", "PNG", "WEBP"}:
            return False
        if image.mode not in _BROWSER_SAFE_MODES or "transparency" in image.info:
            return False
        return fmt == "JPEG" or _orientation(image) == 1


def display_png(data: bytes) -> bytes:
    """A PNG of :func:`load_rgb`: the pixels the model sees, for a browser to draw as they are.
    Fast compression: it is made on request (and cached by the browser), not stored."""
    out = io.BytesIO()
    load_rgb(data).save(out, "PNG", compress_level=1)
    return out.getvalue()


def thumbnail_jpeg(data: bytes, *, max_side: int = 256, quality: int = 85) -> bytes:
    """A JPEG of the upright image whose longer side is at most ``max_side`` pixels."""
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    image = _load_upright_rgb(data, draft=(max_side, max_side))
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()
