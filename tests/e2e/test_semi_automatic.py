"""The semi-automatic stage in a real browser (Debian chromium, headless, through Playwright).

A project in the semi-automatic stage whose image holds two prefilled masks (``proposed``,
source ``prefill``, as a prefill run stores them): the tool shows them as done, in their own
style; the annotator highlights what no mask covers, rejects the wrong prefilled mask with R,
adds the missing object with the brush, marks the image done; the rows say what happened.
"""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from annotation.models import Image, Mask, Membership, Project, Stage
from annotation.services.masks import mask_create
from engine.models import Job
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_tool import (
    LIVE_TIMEOUT_MS,
    canvas_pixel,
    drag_image,
    log_in,
    make_setup,
    screen_point,
    tool_data,
    tool_url,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

W, H = 320, 240


def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_prefilled_masks_are_shown_rejected_completed_and_accepted_on_done(
    live_web: LiveWeb, browser_context
) -> None:
    from playwright.sync_api import expect

    setup = make_setup([(W, H)], embed=True)
    Project.objects.filter(pk=setup.project.pk).update(stage=Stage.SEMI_AUTOMATIC)
    image = setup.images[0]
    good_area, wrong_area = box(200, 50, 290, 180), box(20, 20, 120, 90)
    good = mask_create(
        image=image, binary=good_area, source="prefill", stage="semi_automatic", status="proposed"
    )
    wrong = mask_create(
        image=image, binary=wrong_area, source="prefill", stage="semi_automatic", status="proposed"
    )

    page = browser_context.new_page()
    log_in(page, live_web)
    page.goto(tool_url(live_web, setup, decoder="server"))
    tool = page.locator("#tool")
    expect(tool).to_have_attribute("data-state", "ready", timeout=LIVE_TIMEOUT_MS)

    # Shown as already done, in the prefill style: listed as prefilled, hatched, white edge.
    expect(tool).to_have_attribute("data-prefilled", "2")
    expect(tool).to_have_attribute("data-accepted", "2")
    expect(page.locator("#accepted-list li[data-prefill=proposed]")).to_have_count(2)
    expect(page.locator("#accepted-count")).to_have_text("2 (2 prefilled)")
    expect(page.locator("#prefill-note")).to_be_visible()
    # Drawn at the overlay opacity over the image: the edge white, the inside hatched (bands
    # of the mask's colour and bands where the image shows through unchanged).
    points = [(200, 100)] + [(x, 110) for x in range(230, 242)]
    shown = [canvas_pixel(page, x, y) for x, y in points]
    page.keyboard.press("o")
    bare = [canvas_pixel(page, x, y) for x, y in points]
    page.keyboard.press("o")
    opacity = 0.45
    edge, bare_edge = shown[0], bare[0]
    for channel in range(3):
        assert abs(edge[channel] - (opacity * 255 + (1 - opacity) * bare_edge[channel])) <= 3
    inside = list(zip(shown[1:], bare[1:], strict=True))
    assert any(lit == plain for lit, plain in inside)  # a clear band
    assert any(lit != plain for lit, plain in inside)  # a coloured band

    # Uncovered regions: every pixel outside the two masks.
    page.keyboard.press("u")
    covered = int((good_area | wrong_area).sum())
    expect(tool).to_have_attribute("data-uncovered", str(W * H - covered))

    # R over the wrong mask rejects it (the row stays, as rejected).
    sx, sy = screen_point(page, 70, 55)
    page.mouse.move(sx, sy)
    page.keyboard.press("r")
    expect(tool).to_have_attribute("data-prefilled", "1")
    expect(tool).to_have_attribute("data-uncovered", str(W * H - int(good_area.sum())))
    wrong.refresh_from_db()
    assert (wrong.status, wrong.reviewed_by_id) == ("rejected", setup.user.pk)

    # Ctrl+Z brings it back, R rejects it again.
    page.keyboard.press("Control+z")
    expect(tool).to_have_attribute("data-prefilled", "2")
    wrong.refresh_from_db()
    assert wrong.status == "proposed"
    page.mouse.move(sx + 1, sy)
    page.keyboard.press("r")
    expect(tool).to_have_attribute("data-prefilled", "1")

    # The missing object, painted with the brush and accepted.
    page.keyboard.press("b")
    drag_image(page, (40, 180), (140, 200))
    page.keyboard.press("Enter")
    expect(tool).to_have_attribute("data-accepted", "2")
    added = Mask.objects.get(image=image, source="manual")
    assert (added.status, added.annotator_id, added.stage) == (
        "accepted",
        setup.user.pk,
        "semi_automatic",
    )
    painted = mask_utils.decode({"size": [H, W], "counts": added.rle_counts.encode()}).astype(bool)
    expect(tool).to_have_attribute("data-uncovered", str(W * H - int((good_area | painted).sum())))

    # Done: the prefilled mask left in becomes accepted; the rejected one stays rejected.
    page.keyboard.press("n")
    expect(tool).to_have_attribute("data-state", "no-image", timeout=30_000)
    image.refresh_from_db()
    assert image.status == Image.Status.DONE
    rows = dict(Mask.objects.filter(image=image).values_list("id", "status"))
    assert rows == {good.pk: "accepted", wrong.pk: "rejected", added.pk: "accepted"}
    assert tool_data(page, "prefilled") == "0"


def test_an_admin_moves_the_project_to_semi_automatic_on_its_page(
    live_web: LiveWeb, browser_context
) -> None:
    from playwright.sync_api import expect

    setup = make_setup([(W, H), (W, H)], embed=False)
    Membership.objects.filter(user=setup.user).update(role=Membership.Role.ADMIN)
    page = browser_context.new_page()
    log_in(page, live_web)
    page.goto(f"{live_web.url}/projects/{setup.project.pk}/")
    card = page.locator("#stage")
    expect(card).to_have_attribute("data-stage", "assisted_manual")
    expect(page.locator("[data-figure=accepted]")).to_have_text("0")
    expect(page.locator("#stage-rounds tr[data-version]")).to_have_count(1)  # the tiny import
    page.select_option("#stage-select", "semi_automatic")
    page.click("#stage-submit")
    expect(card).to_have_attribute("data-stage", "semi_automatic")
    expect(page.locator("ul.messages")).to_contain_text("Stage changed to Semi-automatic.")
    expect(page.locator("ul.messages")).to_contain_text("Prefill run #")
    expect(page.locator("#prefill-runs li[data-job]")).to_have_count(1)
    expect(page.locator("#stage-history li")).to_have_count(1)
    setup.project.refresh_from_db()
    assert setup.project.stage == Stage.SEMI_AUTOMATIC
    job = Job.objects.get(kind=Job.Kind.PREFILL)
    assert (job.project_id, job.progress_total, job.created_by_id) == (
        setup.project.pk,
        2,
        setup.user.pk,
    )
