"""What the tool draws is the model's pixels, in a real browser (Debian chromium).

The tool and the review page load an image's ``display_url``. Chromium cannot decode TIFF and
ignores EXIF rotation in WebP; for those the endpoint answers a PNG of ``load_rgb``, which the
browser must draw at the stored (upright) size with the same pixels.
"""

import numpy as np
import pytest
from django.contrib.auth.models import User

from annotation.imaging import load_rgb_array
from annotation.models import Image, Membership, Project
from annotation.services.ingest import images_ingest_batch
from tests.annotation.test_image_display import DRAWN_AS_IS, RENDERED
from tests.e2e.conftest import LiveWeb

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "display-pass-123"
NAMES = ["rgb.tiff", "rotated.webp", "alpha.png", "cmyk.jpg", "rotated.jpg"]

# Loads a URL as the tool does (an <img> decoded, drawn on a canvas); its size and pixels, or
# the decoding error's name.
DRAW = """async (url) => {
  const element = new Image();
  element.src = url;
  try { await element.decode(); } catch (error) { return {error: error.name}; }
  const canvas = document.createElement("canvas");
  canvas.width = element.naturalWidth;
  canvas.height = element.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(element, 0, 0);
  const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
  return {width: canvas.width, height: canvas.height, rgba: Array.from(rgba)};
}"""


def test_the_browser_draws_every_image_as_the_model_sees_it(
    live_web: LiveWeb, browser_context
) -> None:
    user = User.objects.create_user("viewer", password=PASSWORD)
    project = Project.objects.create(name="display-e2e")
    Membership.objects.create(user=user, project=project, role=Membership.Role.ANNOTATOR)
    datas = {name: {**DRAWN_AS_IS, **RENDERED}[name]() for name in NAMES}
    outcomes = images_ingest_batch(project=project, files=list(datas.items()))
    images: dict[str, Image] = {o.file_name: o.image for o in outcomes if o.image is not None}
    assert sorted(images) == sorted(NAMES)

    page = browser_context.new_page()
    page.goto(f"{live_web.url}/accounts/login/")
    page.fill("#id_username", "viewer")
    page.fill("#id_password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{live_web.url}/")

    # Why the endpoint exists: the original TIFF does not draw at all.
    tiff = images["rgb.tiff"]
    assert page.evaluate(DRAW, f"/api/images/{tiff.pk}/content/") == {"error": "EncodingError"}
    for name, image in images.items():
        drawn = page.evaluate(DRAW, f"/api/images/{image.pk}/display/")
        assert "error" not in drawn, (name, drawn)
        assert (drawn["width"], drawn["height"]) == (image.width, image.height), name
        pixels = np.array(drawn["rgba"], np.uint8).reshape(image.height, image.width, 4)
        expected = load_rgb_array(datas[name]).astype(int)
        # JPEGs are decoded by the browser's libjpeg, not Pillow's: equal within rounding.
        tolerance = 2 if name.endswith(".jpg") else 0
        assert np.abs(pixels[..., :3].astype(int) - expected).max() <= tolerance, name
        assert (pixels[..., 3] == 255).all(), name
