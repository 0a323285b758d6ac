"""``GET /api/images/{id}/display/``: what the tool and the review page draw is the model's pixels.

Browsers cannot decode TIFF, ignore EXIF rotation in WebP, and draw transparency, 16-bit grey
and CMYK their own way; for those the endpoint answers a PNG of ``load_rgb``. Everything a
browser draws as ``load_rgb`` decodes it is answered as the original bytes.
"""

import io

import numpy as np
import pytest
from django.core.cache import caches
from PIL import Image as PilImage

from annotation.imaging import browser_draws_as_decoded, load_rgb_array
from annotation.models import Image, Project
from annotation.services.ingest import images_ingest_batch
from annotation.services.projects import project_create
from storage.blobs import get_blob_store
from tests.annotation.test_imaging import encode, jpeg_bytes

pytestmark = pytest.mark.django_db


def noise(height: int, width: int, channels: int, *, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def rotated(fmt: str, orientation: int = 6) -> bytes:
    exif = PilImage.Exif()
    exif[0x0112] = orientation
    return encode(
        PilImage.fromarray(noise(40, 60, 3), "RGB"), fmt, exif=exif.tobytes(), lossless=True
    )


def rgba_png() -> bytes:
    pixels = noise(30, 50, 4, seed=1)
    pixels[:, :25, 3] = 0  # the left half fully transparent: white for the model
    return encode(PilImage.fromarray(pixels, "RGBA"), "PNG")


def grey16_png() -> bytes:
    pixels = np.random.default_rng(2).integers(1000, 3000, size=(20, 30), dtype=np.uint16)
    return encode(PilImage.fromarray(pixels), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(PilImage.fromarray(noise(24, 32, 4, seed=3), "CMYK"), "JPEG", quality=95)


DRAWN_AS_IS = {
    "rgb.jpg": lambda: jpeg_bytes(seed=4),
    "rotated.jpg": lambda: jpeg_bytes(seed=5, orientation=6),  # browsers rotate JPEGs as we do
    "rgb.png": lambda: encode(PilImage.fromarray(noise(20, 30, 3, seed=6), "RGB"), "PNG"),
    "grey.png": lambda: encode(PilImage.fromarray(noise(20, 30, 1, seed=7), "L"), "PNG"),
    "rgb.webp": lambda: encode(
        PilImage.fromarray(noise(20, 30, 3, seed=8), "RGB"), "WEBP", lossless=True
    ),
}
RENDERED = {
    "rgb.tiff": lambda: encode(PilImage.fromarray(noise(20, 30, 3, seed=9), "RGB"), "TIFF"),
    "rotated.webp": lambda: rotated("WEBP"),
    "rotated.png": lambda: rotated("PNG"),
    "alpha.png": rgba_png,
    "grey16.png": grey16_png,
    "cmyk.jpg": cmyk_jpeg,
}


def ingest(project: Project, name: str, data: bytes) -> Image:
    (outcome,) = images_ingest_batch(project=project, files=[(name, data)])
    assert outcome.image is not None, outcome
    return outcome.image


@pytest.mark.parametrize("name", sorted(DRAWN_AS_IS))
def test_bytes_a_browser_draws_as_the_model_sees_them_are_answered_as_they_are(
    name, project, annotator_client
):
    data = DRAWN_AS_IS[name]()
    assert browser_draws_as_decoded(data)
    image = ingest(project, name, data)
    response = annotator_client.get(f"/api/images/{image.pk}/display/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == data


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_other_images_are_answered_as_a_png_of_the_models_pixels(name, project, annotator_client):
    data = RENDERED[name]()
    assert not browser_draws_as_decoded(data)
    image = ingest(project, name, data)
    response = annotator_client.get(f"/api/images/{image.pk}/display/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    drawn = PilImage.open(io.BytesIO(response.content))
    assert (drawn.format, drawn.mode) == ("PNG", "RGB")
    assert drawn.size == (image.width, image.height)  # upright, as stored
    np.testing.assert_array_equal(np.asarray(drawn), load_rgb_array(data))


def test_a_rotated_webp_is_drawn_upright_and_transparency_on_white(project, annotator_client):
    webp = ingest(project, "rotated.webp", rotated("WEBP"))
    assert (webp.width, webp.height) == (40, 60)  # 60 x 40 turned by orientation 6
    alpha = ingest(project, "alpha.png", rgba_png())
    drawn = np.asarray(
        PilImage.open(io.BytesIO(annotator_client.get(f"/api/images/{alpha.pk}/display/").content))
    )
    assert (drawn[:, :25] == 255).all()


def test_the_rendered_png_answers_304_when_the_client_has_it(project, annotator_client):
    image = ingest(project, "a.tiff", RENDERED["rgb.tiff"]())
    first = annotator_client.get(f"/api/images/{image.pk}/display/")
    assert first["ETag"] == f'"{image.sha256}-display"'
    again = annotator_client.get(
        f"/api/images/{image.pk}/display/", HTTP_IF_NONE_MATCH=first["ETag"]
    )
    assert again.status_code == 304


def test_each_request_reads_the_bytes_once(project, annotator_client, monkeypatch):
    tiff = ingest(project, "a.tiff", RENDERED["rgb.tiff"]())
    jpeg = ingest(project, "a.jpg", DRAWN_AS_IS["rgb.jpg"]())
    for image in (tiff, jpeg):
        caches["default"].delete(f"image-drawn-as-is:{image.sha256}")
    store_class = type(get_blob_store())
    reads: list[str] = []
    real_get_bytes = store_class.get_bytes

    def counting(store: object, key: str) -> bytes:
        reads.append(key)
        return real_get_bytes(store, key)  # type: ignore[arg-type]

    monkeypatch.setattr(store_class, "get_bytes", counting)
    for _ in range(2):
        annotator_client.get(f"/api/images/{tiff.pk}/display/")
        annotator_client.get(f"/api/images/{jpeg.pk}/display/")
    # The TIFF is rendered on each request; the JPEG's header is read once, then it streams.
    assert reads == [tiff.blob_key, jpeg.blob_key, tiff.blob_key]


def test_the_image_answers_name_the_display_url(project, annotator_client):
    image = ingest(project, "a.png", DRAWN_AS_IS["rgb.png"]())
    response = annotator_client.get(f"/api/images/{image.pk}/")
    assert response.data["display_url"] == f"/api/images/{image.pk}/display/"


def test_an_image_of_another_project_is_404(project, annotator_client, admin_user):
    other = project_create(name="elsewhere", description="", creator=admin_user)
    image = ingest(other, "a.tiff", RENDERED["rgb.tiff"]())
    assert annotator_client.get(f"/api/images/{image.pk}/display/").status_code == 404
