"""The annotation tool's keys in a real browser: undo after deleting an accepted mask, letter
keys in either case and after a click on a panel control. Setup and helpers: test_tool.py."""

from typing import Any

import numpy as np
import pytest

from annotation.models import Mask
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_tool import (
    LIVE_TIMEOUT_MS,
    click_image,
    log_in,
    make_setup,
    rle_mask,
    screen_point,
    tool_data,
    tool_url,
    wait_decoded,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def open_tool(page: Any, web: LiveWeb, setup: Any, **query: object) -> None:
    log_in(page, web)
    page.goto(tool_url(web, setup, **query))
    page.wait_for_function(
        "() => document.getElementById('tool').dataset.state === 'ready'", timeout=LIVE_TIMEOUT_MS
    )


def tool_with_one_object(web: LiveWeb, browser_context: Any) -> tuple[Any, Any]:
    """(page, setup): the tool, ready, on a new image with one object (embedding stored)."""
    setup = make_setup([(420, 300)], embed=True)
    page = browser_context.new_page()
    open_tool(page, web, setup)
    return page, setup


def accept_object_at(page: Any, x: int, y: int, accepted: int) -> None:
    from playwright.sync_api import expect

    click_image(page, x, y)
    wait_decoded(page, 3)
    page.keyboard.press("Enter")
    expect(page.locator("#tool")).to_have_attribute("data-accepted", str(accepted))


def test_undo_after_deleting_a_mask_undoes_the_step_before_it(
    live_web: LiveWeb, browser_context: Any
) -> None:
    from playwright.sync_api import expect

    page, setup = tool_with_one_object(live_web, browser_context)
    tool = page.locator("#tool")
    status = page.locator("#status-message")

    # Mask 1, the disc: a prompt, cleared and brought back, accepted. Mask 2, the rectangle.
    click_image(page, 147, 135)
    wait_decoded(page, 3)
    page.keyboard.press("Escape")
    page.keyboard.press("Control+z")
    wait_decoded(page, 3)
    page.keyboard.press("Enter")
    expect(tool).to_have_attribute("data-accepted", "1")
    accept_object_at(page, 320, 140, accepted=2)
    first, second = Mask.objects.filter(image=setup.images[0]).order_by("id")

    # Delete mask 2 (hover it, Delete): its prompt leaves the undo history with it.
    ys, xs = np.nonzero(rle_mask(second.rle))
    page.mouse.move(*screen_point(page, int(xs[len(xs) // 2]), int(ys[len(ys) // 2])))
    expect(page.locator(f"#accepted-list li.hovered[data-mask-id='{second.pk}']")).to_have_count(1)
    page.keyboard.press("Delete")
    expect(status).to_have_text(f"Mask #{second.pk} deleted.")
    expect(tool).to_have_attribute("data-accepted", "1")

    # Ctrl+Z undoes the step before: mask 1's accept, which comes back into the editor; then
    # its prompt; then there is nothing left (mask 2's prompt does not come back).
    page.keyboard.press("Control+z")
    expect(status).to_have_text(f"Mask #{first.pk} removed; it is back in the editor.")
    expect(tool).to_have_attribute("data-accepted", "0")
    assert int(tool_data(page, "mask-area")) == first.area
    page.keyboard.press("Control+z")
    expect(tool).to_have_attribute("data-mask-area", "0")
    expect(tool).to_have_attribute("data-candidates", "0")
    page.keyboard.press("Control+z")
    expect(status).to_have_text("Nothing to undo.")
    assert not Mask.objects.filter(image=setup.images[0]).exists()


def test_letters_work_in_either_case_and_after_a_click_on_a_panel_control(
    live_web: LiveWeb, browser_context: Any
) -> None:
    from playwright.sync_api import expect

    page, _ = tool_with_one_object(live_web, browser_context)
    tool = page.locator("#tool")
    # Upper case (Shift, Caps Lock) gives the same shortcuts.
    page.keyboard.press("Shift+B")
    expect(tool).to_have_attribute("data-mode", "brush")
    page.keyboard.press("E")
    expect(tool).to_have_attribute("data-mode", "eraser")
    page.keyboard.press("Shift+P")
    expect(tool).to_have_attribute("data-mode", "prompt")
    page.keyboard.press("O")
    expect(page.locator("#overlay-toggle")).not_to_be_checked()
    # ... and after a click on a panel checkbox or slider.
    page.click("#uncovered-toggle")
    page.keyboard.press("b")
    expect(tool).to_have_attribute("data-mode", "brush")
    page.click("#brush-size")
    page.keyboard.press("e")
    expect(tool).to_have_attribute("data-mode", "eraser")
