"""Editing an accepted mask in the real browser (gunicorn, Debian chromium): M over a mask opens
it in the editor, a brush stroke grows it, Enter saves it under the same id, Ctrl+Z puts the
old pixels back and the edit into the editor, Esc cancels; another annotator's mask cannot be
edited. Fails on any console error."""

import re
from typing import Any

import numpy as np
import pytest

from annotation.models import Mask
from annotation.services.masks import mask_create
from tests.annotation.workflow import member
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_rounds_page import close_connection, console_errors
from tests.e2e.test_tool import drag_image, make_setup, rle_mask, screen_point, tool_data
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
