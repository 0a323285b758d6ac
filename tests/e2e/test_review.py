"""The review queue in a real browser (Debian chromium, headless, through Playwright).

gunicorn serves the test database (``live_web`` in conftest.py); an annotator's masks are
stored with the services, a reviewer logs in and works through the queue. Pages left open when
a test fails are saved as screenshots (``browser_context``).
"""

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.db import connection
from PIL import Image as PilImage
from pycocotools import mask as mask_utils

from annotation.models import Image, Mask, Membership, Project
from annotation.services.ingest import images_ingest_batch
from annotation.services.masks import mask_create
from tests.e2e.conftest import LiveWeb

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "reviewer-pass-123"
BACKGROUND = (40, 60, 80)
WIDTH, HEIGHT = 320, 240
# Tall and wide rectangles: a row/column-major mix-up in the browser's RLE decoding would
# draw them transposed, which the pixel checks below notice.
BOX_A = (40, 50, 120, 150)  # x0, y0, x1, y1 (exclusive)
BOX_B = (180, 60, 280, 200)
FIRST_COLOUR = (239, 68, 68)  # review.js PALETTE[0], the focused mask (alpha 0.7)
SECOND_COLOUR = (59, 130, 246)  # PALETTE[1], drawn at alpha 0.4


@dataclass
class Setup:
    project: Project
    reviewer: User
    annotator: User
    images: list[Image]
    masks: list[Mask]  # A and B on the first image, C on the second


def flat_png(seed: int) -> bytes:
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[:] = BACKGROUND
    pixels[0, 0] = (seed, seed, seed)  # distinct bytes per image
    out = io.BytesIO()
    PilImage.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def box_rle(box: tuple[int, int, int, int]) -> dict:
    x0, y0, x1, y1 = box
    pixels = np.zeros((HEIGHT, WIDTH), np.uint8)
    pixels[y0:y1, x0:x1] = 1
    encoded = mask_utils.encode(np.asfortranarray(pixels))
    return {"size": [HEIGHT, WIDTH], "counts": encoded["counts"].decode()}


def make_setup() -> Setup:
    project = Project.objects.create(name="review-e2e")
    reviewer = User.objects.create_user("rita", password=PASSWORD)
    annotator = User.objects.create_user("bea", password=PASSWORD)
    Membership.objects.create(user=reviewer, project=project, role=Membership.Role.REVIEWER)
    Membership.objects.create(user=annotator, project=project, role=Membership.Role.ANNOTATOR)
    outcomes = images_ingest_batch(
        project=project, files=[("first.png", flat_png(1)), ("second.png", flat_png(2))]
    )
    images = [outcome.image for outcome in outcomes if outcome.image is not None]
    assert len(images) == 2
    masks = [
        mask_create(image=image, rle=box_rle(box), source="assisted", annotator=annotator,
                    clicks=clicks, seconds_spent=seconds)
        for image, box, clicks, seconds in [
            (images[0], BOX_A, 3, 12.0), (images[0], BOX_B, 5, 20.0), (images[1], BOX_A, 1, 4.0)
        ]
    ]  # fmt: skip
    return Setup(project, reviewer, annotator, images, masks)


def closes_its_connection(test: Callable[..., None]) -> Callable[..., None]:
    """Close the test body's database connection when it ends.

    Under Playwright's sync API the test body runs in a greenlet of its own, with its own
    context variables, so Django hands it a connection of its own too, which pytest-django's
    teardown (in the main greenlet) does not see; left open, it blocks dropping the test
    database.
    """

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            test(*args, **kwargs)
        finally:
            connection.close()

    return run


def log_in(page, web: LiveWeb, username: str) -> None:
    page.goto(f"{web.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{web.url}/")


def wait_drawn(page, image: Image, masks: int) -> None:
    page.wait_for_function(
        """([id, n]) => { const c = document.getElementById('review-canvas');
                          return c.dataset.ready === '1' && c.dataset.imageId === String(id)
                                 && c.dataset.masksDrawn === String(n); }""",
        arg=[image.pk, masks],
        timeout=30_000,
    )


def canvas_pixel(page, x: int, y: int) -> list[int]:
    """RGB of the review canvas at image pixel (x, y) (the canvas has the image's size)."""
    return page.evaluate(
        """([x, y]) => [...document.getElementById('review-canvas').getContext('2d')
                          .getImageData(x, y, 1, 1).data].slice(0, 3)""",
        [x, y],
    )


def blend(colour: tuple[int, int, int], alpha: float) -> list[float]:
    return [b * (1 - alpha) + c * alpha for b, c in zip(BACKGROUND, colour, strict=True)]


def assert_close(actual: list[int], expected: list[float] | tuple[int, ...]) -> None:
    assert all(abs(a - e) <= 3 for a, e in zip(actual, expected, strict=True)), (actual, expected)


def screen_point(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y) on the (CSS-scaled) review canvas."""
    return page.evaluate(
        """([x, y]) => { const c = document.getElementById('review-canvas');
                         const r = c.getBoundingClientRect();
                         return [r.left + (x + 0.5) * r.width / c.width,
                                 r.top + (y + 0.5) * r.height / c.height]; }""",
        [x, y],
    )


@closes_its_connection
def test_a_reviewer_rejects_a_mask_with_a_reason(live_web: LiveWeb, browser_context) -> None:
    setup = make_setup()
    first, second, third = setup.masks
    page = browser_context.new_page()
    log_in(page, live_web, "rita")

    page.click(f"#project-table a[href='/projects/{setup.project.pk}/review/']")
    page.wait_for_url(f"{live_web.url}/projects/{setup.project.pk}/review/")
    assert page.locator("[data-count=queue-images]").inner_text() == "2"
    assert page.locator("[data-count=queue-masks]").inner_text() == "3"
    wait_drawn(page, setup.images[0], 2)
    # The masks are drawn where they are: the focused one strongest, the other lighter,
    # the background untouched.
    assert_close(canvas_pixel(page, 80, 140), blend(FIRST_COLOUR, 0.7))
    assert_close(canvas_pixel(page, 270, 190), blend(SECOND_COLOUR, 0.4))
    assert_close(canvas_pixel(page, 150, 100), BACKGROUND)
    assert_close(canvas_pixel(page, 140, 60), BACKGROUND)  # A transposed would cover this

    row = page.locator(f".mask-row[data-mask-id='{first.pk}']")
    row.locator("[data-action=reject]").click()
    row.locator("textarea[name=reason]").fill("leaks into the background on the left")
    row.locator("[data-action=confirm-reject]").click()
    row.wait_for(state="detached")
    assert page.locator("#review-done-count").inner_text() == "1"
    wait_drawn(page, setup.images[0], 1)

    first.refresh_from_db()
    assert first.status == Mask.Status.REJECTED
    assert first.rejection_reason == "leaks into the background on the left"
    assert first.reviewed_by == setup.reviewer
    assert first.reviewed_at is not None
    second.refresh_from_db()
    assert second.status == Mask.Status.ACCEPTED
    assert second.reviewed_at is None

    page.reload()
    wait_drawn(page, setup.images[0], 1)
    assert page.locator(f".mask-row[data-mask-id='{first.pk}']").count() == 0
    assert page.locator(".mask-row").count() == 2
    assert page.locator("[data-count=queue-masks]").inner_text() == "2"

    page.goto(f"{live_web.url}/projects/{setup.project.pk}/")
    assert page.locator("[data-count=review-pending]").inner_text() == "2"
    assert page.locator(".stat [data-count=accepted]").inner_text() == "2"
    assert page.locator(".stat [data-count=images]").inner_text() == "2"
    bea = page.locator(f"#annotator-table tr[data-annotator='{setup.annotator.pk}']")
    assert bea.locator("[data-cell=masks]").inner_text() == "3"  # rejected work still counts
    assert bea.locator("[data-cell=masks_rejected]").inner_text() == "1 / 1 (100%)"

    page.click("#stats-link")
    page.wait_for_url(f"{live_web.url}/projects/{setup.project.pk}/stats/")
    assert page.locator("[data-total=masks]").inner_text() == "3"
    assert page.locator("[data-total=seconds_per_mask]").inner_text() == "12.0"
    assert page.locator("[data-total=clicks_per_mask]").inner_text() == "3.0"
    assert page.locator("[data-total=images_total]").inner_text() == "2"
    assert page.locator("[data-total=masks_rejected]").inner_text() == "1"
    assert page.locator("[data-total=masks_reviewed]").inner_text() == "1"
    page.wait_for_selector("figure[data-field=seconds_per_mask] svg.chart .chart-dot")
    assert page.locator("figure[data-chart] svg.chart").count() == 4

    # A verdict the server refuses (the mask was deleted meanwhile) is explained on its card,
    # which stays.
    page.goto(f"{live_web.url}/projects/{setup.project.pk}/review/")
    wait_drawn(page, setup.images[0], 1)
    Mask.objects.filter(pk=second.pk).delete()
    row = page.locator(f".mask-row[data-mask-id='{second.pk}']")
    row.locator("[data-action=approve]").click()
    error = row.locator(".row-error")
    error.wait_for(state="visible")
    assert error.inner_text().strip()
    assert page.locator("#review-done-count").inner_text() == "0"
    third.refresh_from_db()
    assert third.reviewed_at is None


@closes_its_connection
def test_a_reviewer_fixes_a_mask_with_the_brush_and_approves_another(
    live_web: LiveWeb, browser_context
) -> None:
    setup = make_setup()
    first, second, third = setup.masks
    page = browser_context.new_page()
    log_in(page, live_web, "rita")
    page.goto(f"{live_web.url}/projects/{setup.project.pk}/review/")
    wait_drawn(page, setup.images[0], 2)

    # Fix B: paint a horizontal stroke from inside B out to the left, then save.
    page.locator(f".mask-row[data-mask-id='{second.pk}'] [data-action=fix]").click()
    page.wait_for_selector("#fix-toolbar:not([hidden])")
    page.fill("#fix-size", "20")
    page.dispatch_event("#fix-size", "input")
    start = screen_point(page, 200, 100)
    end = screen_point(page, 140, 100)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=15)
    page.mouse.up()
    page.click("#fix-save")
    page.locator(f".mask-row[data-mask-id='{second.pk}']").wait_for(state="detached")

    second.refresh_from_db()
    assert second.status == Mask.Status.ACCEPTED
    assert second.reviewed_by == setup.reviewer
    fixed = mask_utils.decode({"size": [HEIGHT, WIDTH], "counts": second.rle_counts.encode()})
    x0, y0, x1, y1 = BOX_B
    assert fixed[y0:y1, x0:x1].all()  # the original pixels stay
    assert fixed[100, 150] == 1  # the stroke was added
    # ... and ends where the pointer stopped (x 140), give or take the 10 px brush radius
    assert fixed[100, 132] == 1
    assert fixed[100, 127] == 0
    assert fixed[80, 150] == 0  # a 20 px wide stroke around y 100
    assert second.area > (x1 - x0) * (y1 - y0)

    # Approve A: the first image has nothing left to review, so the next one opens.
    page.locator(f".mask-row[data-mask-id='{first.pk}'] [data-action=approve]").click()
    wait_drawn(page, setup.images[1], 1)
    first.refresh_from_db()
    assert first.status == Mask.Status.ACCEPTED
    assert first.reviewed_at is not None
    assert page.locator(f"[data-select-image='{setup.images[0].pk}']").count() == 0

    # Keyboard: A approves the focused (last) mask; the page then says it is done.
    page.keyboard.press("a")
    page.wait_for_selector("#review-page-done:not([hidden])")
    third.refresh_from_db()
    assert third.reviewed_at is not None
    page.reload()
    assert page.locator("#review-empty").is_visible()
