"""annotation.imaging: what is accepted, what is refused and why, and the pixels the model gets.

The image builders here are also used by the ingestion tests.
"""

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from annotation.errors import ImageRejected
from annotation.imaging import (
    inspect_image,
    load_rgb,
    load_rgb_array,
    safe_file_name,
    thumbnail_jpeg,
)

LIMITS = {"max_pixels": 50_000_000, "max_bytes": 10 * 1024 * 1024}


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def jpeg_bytes(width: int = 64, height: int = 48, *, seed: int = 0, orientation: int = 1) -> bytes:
    """A noisy RGB JPEG; different seeds give different bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    return encode(Image.fromarray(pixels, "RGB"), "JPEG", quality=90, exif=exif.tobytes())


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bomb(width: int, height: int, *, real_pixels: bool = True) -> bytes:
    """A 1-bit PNG of ``width x height`` black pixels, compressed row block by row block.

    With ``real_pixels=False`` the IDAT is garbage: only a check made from the header, before
    decoding, can then refuse it for its size rather than as corrupt data.
    """
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    if real_pixels:
        compressor = zlib.compressobj(9)
        row = b"\x00" * (1 + (width + 7) // 8)
        blocks, rest = divmod(height, 256)
        parts = [compressor.compress(row * 256) for _ in range(blocks)]
        parts += [compressor.compress(row * rest), compressor.flush()]
        idat = b"".join(parts)
    else:
        idat = b"not zlib data at all"
    signature = b"\x89PNG\r\n\x1a\n"
    return (
        signature + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def two_colour(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    return image


def inspect(data: bytes, name: str = "x.jpg", **limits: int):
    return inspect_image(data, file_name=name, **{**LIMITS, **limits})


# --- Accepted images ---------------------------------------------------------------------


def test_inspect_reports_format_size_hash_and_byte_count():
    data = jpeg_bytes(64, 48)
    info = inspect(data)
    assert (info.format, info.width, info.height) == ("JPEG", 64, 48)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.byte_size == len(data)
    assert info.content_type == "image/jpeg"


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_exif_orientation_that_rotates_swaps_reported_width_and_height(orientation):
    info = inspect(jpeg_bytes(64, 48, orientation=orientation))
    assert (info.width, info.height) == (48, 64)


def test_exif_orientation_3_keeps_width_and_height():
    info = inspect(jpeg_bytes(64, 48, orientation=3))
    assert (info.width, info.height) == (64, 48)


def test_load_rgb_applies_orientation_6_once():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be turned 90 degrees clockwise to be upright
    data = encode(two_colour(40, 20), "PNG", exif=exif.tobytes())
    pixels = load_rgb_array(data)
    assert pixels.shape == (40, 20, 3)
    # Clockwise rotation brings the left (red) half to the top.
    assert tuple(pixels[2, 10]) == (255, 0, 0)
    assert tuple(pixels[37, 10]) == (0, 0, 255)


@pytest.mark.parametrize(
    ("fmt", "params", "expected"),
    [
        ("PNG", {}, "PNG"),
        ("WEBP", {"lossless": True}, "WEBP"),
        ("TIFF", {}, "TIFF"),
        ("TIFF", {"compression": "tiff_lzw"}, "TIFF"),
    ],
)
def test_png_webp_and_tiff_are_accepted_with_exact_pixels(fmt, params, expected):
    data = encode(two_colour(), fmt, **params)
    assert inspect(data).format == expected
    pixels = load_rgb_array(data)
    assert tuple(pixels[5, 5]) == (255, 0, 0)
    assert tuple(pixels[5, 35]) == (0, 0, 255)


def test_grayscale_png_becomes_three_equal_channels():
    data = encode(Image.new("L", (8, 6), 77), "PNG")
    pixels = load_rgb_array(data)
    assert pixels.shape == (6, 8, 3)
    assert pixels.dtype == np.uint8
    assert tuple(pixels[0, 0]) == (77, 77, 77)


def test_rgba_png_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((1, 1), (255, 0, 0, 255))
    image.putpixel((2, 2), (0, 0, 0, 128))
    pixels = load_rgb_array(encode(image, "PNG"))
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # fully transparent → white
    assert tuple(pixels[1, 1]) == (255, 0, 0)  # opaque stays
    assert all(abs(int(v) - 127) <= 1 for v in pixels[2, 2])  # half black over white → grey


def test_palette_png_with_transparent_index_shows_white_there():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 255, 0, 10, 20, 30] + [0] * 762)
    image.putpixel((3, 3), 1)
    pixels = load_rgb_array(encode(image, "PNG", transparency=0))
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[3, 3]) == (10, 20, 30)


def test_opaque_palette_png_keeps_palette_colours():
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    assert tuple(load_rgb_array(encode(image, "PNG"))[2, 2]) == (200, 100, 50)


def test_cmyk_jpeg_is_accepted_and_converted_to_rgb():
    data = encode(Image.new("CMYK", (32, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    info = inspect(data)
    assert (info.format, info.mode, info.width, info.height) == ("JPEG", "CMYK", 32, 16)
    red, green, blue = (int(v) for v in load_rgb_array(data)[8, 16])
    assert red > 240
    assert green < 15
    assert blue < 15


def test_sixteen_bit_grey_png_is_scaled_to_eight_bits():
    data = encode(Image.new("I;16", (4, 4), 40000), "PNG")
    assert inspect(data).mode.startswith("I")
    assert tuple(load_rgb_array(data)[0, 0]) == (156, 156, 156)  # 40000 / 257


def test_mpo_from_a_phone_is_accepted_as_its_primary_jpeg():
    frames = [Image.new("RGB", (16, 8), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert inspect(data).format == "JPEG"
    red, green, _ = (int(v) for v in load_rgb_array(data)[4, 8])
    assert red > 240
    assert green < 15


def test_load_rgb_array_is_writable_contiguous_uint8():
    pixels = load_rgb_array(jpeg_bytes(20, 10))
    assert pixels.shape == (10, 20, 3)
    assert pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous
    assert pixels.flags.writeable


def test_load_rgb_returns_an_rgb_image():
    image = load_rgb(encode(Image.new("LA", (5, 3), (10, 255)), "PNG"))
    assert (image.mode, image.size) == ("RGB", (5, 3))


def test_thumbnail_is_a_jpeg_within_max_side_keeping_aspect_and_orientation():
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(jpeg_bytes(800, 400, orientation=6))))
    assert thumb.format == "JPEG"
    assert thumb.size == (128, 256)  # upright: 400 x 800 scaled to fit 256


def test_thumbnail_never_enlarges_a_small_image():
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(jpeg_bytes(40, 30), max_side=256)))
    assert thumb.size == (40, 30)


# --- Refused images ----------------------------------------------------------------------


def rejection(data: bytes, name: str = "x.jpg", **limits: int) -> str:
    with pytest.raises(ImageRejected) as caught:
        inspect(data, name, **limits)
    assert caught.value.details == {
        "file_name": name,
        "reason": caught.value.message[len(name) + 2 :],
    }
    return caught.value.message


def test_zero_byte_file_is_refused():
    assert rejection(b"", "empty.jpg") == "empty.jpg: empty file (0 bytes)"


def test_file_over_the_byte_limit_is_refused():
    data = jpeg_bytes()
    message = rejection(data, max_bytes=len(data) - 1)
    assert f"file is {len(data)} bytes, over the limit of {len(data) - 1} bytes" in message


def test_text_file_named_png_is_not_an_image():
    message = rejection(b"hello, I am plain text\n" * 10, "notes.png")
    assert message.startswith("notes.png: not an image")


@pytest.mark.parametrize("fmt", ["GIF", "BMP"])
def test_other_image_formats_are_refused_by_name(fmt):
    message = rejection(encode(two_colour(), fmt), "a.img")
    assert f"unsupported format {fmt}" in message


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg_is_refused_after_a_full_decode(keep):
    data = jpeg_bytes(256, 256)
    message = rejection(data[: int(len(data) * keep)], "cut.jpg")
    assert "truncated or corrupt JPEG" in message


def test_corrupt_png_data_is_refused():
    data = bytearray(encode(two_colour(), "PNG"))
    data[60:70] = b"\xff" * 10  # inside IDAT
    assert "truncated or corrupt PNG" in rejection(bytes(data), "bad.png")


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # The pixel data is garbage: had it been decoded, the reason would be "corrupt".
    data = png_bomb(12_000, 12_000, real_pixels=False)
    message = rejection(data, "bomb.png", max_pixels=100_000_000)
    assert "12000x12000 = 144000000 pixels is over the limit of 100000000 pixels" in message
    assert "not decoded" in message


def test_pixel_limit_is_configurable():
    data = png_bomb(3_000, 3_000)
    assert inspect(data, "ok.png", max_pixels=9_000_000).width == 3_000
    assert "over the limit of 8999999 pixels" in rejection(data, "ok.png", max_pixels=8_999_999)


def test_30000_square_png_bomb_of_a_hundred_kb_is_refused_undecoded():
    data = png_bomb(30_000, 30_000)
    assert len(data) < 150_000
    message = rejection(data, "bomb.png", max_pixels=10**12)  # Pillow's own guard still holds
    assert "decompression bomb" in message
    assert "not decoded" in message


def test_animated_webp_is_refused():
    frames = [Image.new("RGB", (8, 8), (i * 80, 0, 0)) for i in range(3)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    assert "animated or multi-page WEBP with 3 frames" in rejection(data, "anim.webp")


def test_multi_page_tiff_is_refused():
    pages = [Image.new("L", (8, 8), i * 50) for i in range(2)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert "multi-page TIFF with 2 frames" in rejection(data, "pages.tif")


def test_inspection_refuses_to_run_if_truncated_images_were_switched_on(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        inspect(jpeg_bytes())


# --- File names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("photo.jpg", "photo.jpg"),
        ("cats/001.jpg", "001.jpg"),
        ("IMG 0001 (2).JPG", "IMG 0001 (2).JPG"),
    ],
)
def test_safe_file_name_returns_the_base_name(name, stored):
    assert safe_file_name(name) == stored


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("../etc/passwd", "path traversal"),
        ("a/../../b.png", "path traversal"),
        ("./a.png", "path traversal"),
        ("/etc/passwd", "absolute path"),
        ("C:evil.png", "absolute path"),
        ("..\\..\\evil.png", "backslash"),
        ("evil\x00.png", "NUL"),
        ("dir/", "no file name"),
        ("x" * 300 + ".png", "longer than 255"),
    ],
)
def test_safe_file_name_refuses_unsafe_names(name, reason):
    with pytest.raises(ImageRejected, match=reason):
        safe_file_name(name)
