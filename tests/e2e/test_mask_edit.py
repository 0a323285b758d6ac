"""Editing masks in the real browser (gunicorn, Debian chromium): M over a mask opens it in the
editor, a brush stroke grows it, Enter saves it under the same id, Ctrl+Z puts the old pixels
back and the edit into the editor, Esc cancels; another annotator's mask cannot be edited. A
mask sent back by review opens from its link, is fixed and resubmitted. Fails on any console
error."""

import re
from typing import Any

import numpy as np
import pytest

from annotation.models import Mask
from annotation.services.masks import mask_create
from annotation.services.review import mask_reject
from tests.annotation.workflow import member
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_rounds_page import close_connection, console_errors
from tests.e2e.test_tool import (
    drag_image,
    log_in,
    make_setup,
    rle_mask,
    screen_point,
    tool_data,
)
from tests.e2e.test_tool_keys import accept_object_at, open_tool

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
__all__ = ["close_connection", "console_errors"]  # fixtures used by name


def _hover(page: Any, x: int, y: int) -> None:
    sx, sy = screen_point(page, x, y)
    page.mouse.move(sx, sy)


def test_an_accepted_mask_is_edited_saved_undone_and_cancelled(
    live_web: LiveWeb, browser_context: Any, console_errors: list[str], close_connection: None
) -> None:
    from playwright.sync_api import expect

    setup = make_setup([(420, 300)], embed=True)
    (image,) = setup.images
    # Another annotator's mask in the top-left corner: no Edit for this annotator.
    corner = np.zeros((300, 420), dtype=bool)
    corner[4:30, 4:40] = True
    theirs = mask_create(
        image=image,
        binary=corner,
        source="manual",
        annotator=member(setup.project, "dora", "annotator"),
    )
    page = browser_context.new_page()
    open_tool(page, live_web, setup, decoder="server")
    tool = page.locator("#tool")
    status = page.locator("#status-message")
    accept_object_at(page, 147, 135, 2)
    ours = Mask.objects.exclude(pk=theirs.pk).get()
    accepted_area = ours.area

    # M over the mask: it opens in the editor with its pixels.
    _hover(page, 147, 135)
    page.keyboard.press("m")
    expect(tool).to_have_attribute("data-editing", str(ours.pk))
    assert int(tool_data(page, "mask-area")) == accepted_area
    expect(page.locator(f"#accepted-list li[data-mask-id='{ours.pk}']")).to_have_class(
        re.compile(r"\bediting\b")
    )
    # A brush stroke from inside the mask out to the right grows it.
    page.keyboard.press("b")
    drag_image(page, (147, 135), (215, 135))
    edited_area = int(tool_data(page, "mask-area"))
    assert edited_area > accepted_area
    edited_rle = page.evaluate("window.maskloopTool.workRle()")
    page.keyboard.press("Enter")
    expect(tool).to_have_attribute("data-editing", "")
    expect(status).to_contain_text(f"Mask #{ours.pk} saved (edit 1")
    ours.refresh_from_db()
    assert (ours.area, ours.edit_count, ours.edited_by_id) == (edited_area, 1, setup.user.pk)
    assert ours.brush_strokes == 1
    assert np.array_equal(rle_mask(ours.rle), rle_mask(edited_rle))
    assert Mask.objects.count() == 2  # the same row, not a new one
    expect(tool).to_have_attribute("data-accepted", "2")

    # Ctrl+Z: the old pixels are stored again and the edit is back in the editor.
    page.keyboard.press("Control+z")
    expect(tool).to_have_attribute("data-editing", str(ours.pk))
    expect(status).to_contain_text("back in the editor")
    ours.refresh_from_db()
    assert ours.area == accepted_area
    assert int(tool_data(page, "mask-area")) == edited_area
    # Esc cancels the edit (Ctrl+Z would bring it back); the stored mask stays as it was.
    page.keyboard.press("Escape")
    expect(tool).to_have_attribute("data-editing", "")
    expect(status).to_have_text(f"Editing of mask #{ours.pk} cancelled (Ctrl+Z brings it back).")
    ours.refresh_from_db()
    assert ours.area == accepted_area

    # The Edit button opens it too; Esc with nothing changed just leaves the editor.
    page.click(f"#accepted-list li[data-mask-id='{ours.pk}'] .edit-mask")
    expect(tool).to_have_attribute("data-editing", str(ours.pk))
    page.keyboard.press("Escape")
    expect(status).to_have_text(f"Editing of mask #{ours.pk} cancelled.")

    # The other annotator's mask: no Edit button, and M over it says why.
    expect(page.locator(f"#accepted-list li[data-mask-id='{theirs.pk}'] .edit-mask")).to_have_count(
        0
    )
    page.keyboard.press("p")
    _hover(page, 20, 15)
    page.keyboard.press("m")
    expect(status).to_contain_text("only a reviewer may edit it")
    expect(tool).to_have_attribute("data-editing", "")
    theirs.refresh_from_db()
    assert theirs.edit_count == 0
    assert console_errors == []


def test_a_mask_sent_back_by_review_is_fixed_from_its_link_and_resubmitted(
    live_web: LiveWeb, browser_context: Any, console_errors: list[str], close_connection: None
) -> None:
    from playwright.sync_api import expect

    setup = make_setup([(420, 300)], embed=True)
    (image,) = setup.images
    square = np.zeros((300, 420), dtype=bool)
    square[100:160, 100:160] = True
    mask = mask_create(image=image, binary=square, source="manual", annotator=setup.user)
    mask_reject(mask=mask, reviewer=member(setup.project, "rita", "reviewer"), reason="too small")
    page = browser_context.new_page()
    log_in(page, live_web)
    page.goto(f"{live_web.url}/projects/{setup.project.pk}/")
    page.click("#sent-back-link")
    expect(page.locator("#sent-back-table [data-cell=reason]")).to_have_text("too small")
    page.click("#sent-back-table [data-fix-link]")
    tool = page.locator("#tool")
    # The link opens the mask in the editor; the panel lists it with the reason.
    expect(tool).to_have_attribute("data-editing", str(mask.pk))
    expect(page.locator("#sent-back-list li")).to_contain_text("too small")
    expect(tool).to_have_attribute("data-state", "ready", timeout=60_000)
    assert "mask=" not in page.url
    page.keyboard.press("b")
    drag_image(page, (130, 130), (200, 130))
    page.keyboard.press("Enter")
    expect(page.locator("#status-message")).to_have_text(
        f"Mask #{mask.pk} fixed and sent back to review."
    )
    expect(tool).to_have_attribute("data-sent-back", "0")
    expect(tool).to_have_attribute("data-accepted", "1")
    expect(page.locator("#sent-back-block")).to_be_hidden()
    mask.refresh_from_db()
    assert (mask.status, mask.reviewed_at, mask.rejection_reason) == ("accepted", None, "too small")
    assert mask.area > int(square.sum())
    # Resubmitting is not undone by Ctrl+Z: the mask stays in the review queue.
    page.keyboard.press("Control+z")
    expect(page.locator("#status-message")).to_have_text("Nothing to undo.")
    mask.refresh_from_db()
    assert mask.status == "accepted"
    assert console_errors == []
