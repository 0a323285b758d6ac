"""Categories in the annotation tool, in the real browser (gunicorn, Debian chromium): without
any the panel has no Category block and accepts send none; with some, the chosen category is
stored with each accepted mask, stays chosen, C cycles it through "(none)", the editor relabels
a mask (Enter saves, Ctrl+Z puts the old category back) and the choice survives a reload.
Setup and helpers: test_tool.py, test_tool_keys.py. Fails on any console error."""

from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from annotation.models import Mask
from annotation.services.categories import category_create
from annotation.services.masks import mask_create
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_rounds_page import close_connection, console_errors
from tests.e2e.test_tool import LIVE_TIMEOUT_MS, click_image, drag_image, make_setup, wait_decoded
from tests.e2e.test_tool_keys import accept_object_at, open_tool

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
__all__ = ["close_connection", "console_errors"]  # fixtures used by name


def _reload(page: Any) -> None:
    page.reload()
    page.wait_for_function(
        "() => document.getElementById('tool').dataset.state === 'ready'", timeout=LIVE_TIMEOUT_MS
    )


def test_categories_are_chosen_stored_cycled_and_changed_in_the_editor(
    live_web: LiveWeb, browser_context: Any, console_errors: list[str], close_connection: None
) -> None:
    from playwright.sync_api import expect

    setup = make_setup([(420, 300)], embed=True)
    (image,) = setup.images
    page = browser_context.new_page()
    open_tool(page, live_web, setup, decoder="server")
    tool = page.locator("#tool")
    status = page.locator("#status-message")
    select = page.locator("#category-select")

    def row(mask: Mask) -> Any:
        return page.locator(f"#accepted-list li[data-mask-id='{mask.pk}']")

    # No categories: no block, C says so, and the accept sends no category at all.
    expect(page.locator("#category-block")).to_be_hidden()
    page.keyboard.press("c")
    expect(status).to_contain_text("This project has no categories")
    click_image(page, 320, 140)
    wait_decoded(page, 3)
    masks_url = f"/api/images/{image.pk}/masks/"
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith(masks_url)) as sent:
        page.keyboard.press("Enter")
    expect(tool).to_have_attribute("data-accepted", "1")
    assert "category" not in sent.value.post_data_json
    plain = Mask.objects.get()
    assert plain.category_id is None

    # Two categories; the tool loads them when it (re)opens.
    car = category_create(project=setup.project, name="car")
    person = category_create(project=setup.project, name="person", color="#3366ff")
    _reload(page)
    expect(page.locator("#category-block")).to_be_visible()
    expect(select.locator("option")).to_have_text(["(none)", "car", "person"])
    expect(tool).to_have_attribute("data-category", "")
    expect(row(plain)).to_contain_text(f"#{plain.pk} · assisted · ")

    # Pick "car" in the select, accept the disc: stored with it, its row says so.
    select.select_option(str(car.pk))
    expect(tool).to_have_attribute("data-category", str(car.pk))
    accept_object_at(page, 147, 135, 2)
    first = Mask.objects.latest("id")
    assert first.category_id == car.pk
    expect(row(first)).to_contain_text(f"#{first.pk} · car · assisted · {first.area} px")
    expect(tool).to_have_attribute("data-category", str(car.pk))  # sticky

    # C: the next category ("person", its colour beside the select); a brushed mask gets it.
    page.keyboard.press("c")
    expect(tool).to_have_attribute("data-category", str(person.pk))
    expect(status).to_have_text("Category: person, for the next masks.")
    expect(page.locator("#category-swatch")).to_have_css("background-color", "rgb(51, 102, 255)")
    page.keyboard.press("b")
    drag_image(page, (30, 260), (90, 260))
    page.keyboard.press("Enter")
    expect(tool).to_have_attribute("data-accepted", "3")
    second = Mask.objects.latest("id")
    assert (second.category_id, second.source) == (person.pk, "manual")
    expect(row(second)).to_contain_text(f"#{second.pk} · person · manual")
    # Its overlay is drawn in the category's colour (masks without one: the tool's palette).
    colour = f"() => window.maskloopTool.accepted.find((m) => m.id === {second.pk}).color"
    assert page.evaluate(colour) == [51, 102, 255]
    # C after the last category wraps to "(none)".
    page.keyboard.press("c")
    expect(tool).to_have_attribute("data-category", "")
    expect(select).to_have_value("")

    # The editor shows the mask's category; a new one picked there is saved by Enter alone.
    page.click(f"#accepted-list li[data-mask-id='{first.pk}'] .edit-mask")
    expect(tool).to_have_attribute("data-editing", str(first.pk))
    expect(tool).to_have_attribute("data-category", str(car.pk))
    select.select_option(str(person.pk))
    expect(tool).to_have_attribute("data-category", str(person.pk))
    page.keyboard.press("n")  # a relabel not saved yet is not dropped by one N
    expect(status).to_contain_text("This edit is not saved")
    pixels_before = (first.rle_counts, first.area)
    page.keyboard.press("Enter")
    expect(status).to_contain_text(f"Mask #{first.pk} saved (edit 1")
    expect(tool).to_have_attribute("data-editing", "")
    expect(tool).to_have_attribute("data-category", "")  # the sticky choice again
    first.refresh_from_db()
    assert (first.category_id, first.edit_count) == (person.pk, 1)
    assert (first.rle_counts, first.area) == pixels_before
    expect(row(first)).to_contain_text(f"#{first.pk} · person · assisted")

    # Ctrl+Z stores the old category again, with the relabel back in the editor; Esc leaves.
    page.keyboard.press("Control+z")
    expect(tool).to_have_attribute("data-editing", str(first.pk))
    expect(tool).to_have_attribute("data-category", str(person.pk))
    expect(row(first)).to_contain_text(f"#{first.pk} · car · assisted")
    first.refresh_from_db()
    assert first.category_id == car.pk
    page.keyboard.press("Escape")
    expect(tool).to_have_attribute("data-editing", "")
    expect(tool).to_have_attribute("data-category", "")
    first.refresh_from_db()
    assert first.category_id == car.pk

    # L: the keyboard goes to the list, a first letter picks, the focus comes back.
    page.keyboard.press("l")
    expect(select).to_be_focused()
    page.keyboard.press("p")
    expect(tool).to_have_attribute("data-category", str(person.pk))
    expect(page.locator("#tool-canvas")).to_be_focused()

    # The choice is remembered for the project across a reload.
    page.keyboard.press("c")
    expect(tool).to_have_attribute("data-category", "")
    page.keyboard.press("c")
    expect(tool).to_have_attribute("data-category", str(car.pk))
    _reload(page)
    expect(tool).to_have_attribute("data-category", str(car.pk))
    expect(select).to_have_value(str(car.pk))
    assert Mask.objects.count() == 3

    # A row's own select relabels that mask at once (an edit of it); Ctrl+Z takes it back.
    row(plain).locator("select.row-category").select_option(str(person.pk))
    expect(status).to_have_text(f"Mask #{plain.pk} is now person.")
    plain.refresh_from_db()
    assert (plain.category_id, plain.edit_count) == (person.pk, 1)
    page.keyboard.press("Control+z")
    expect(status).to_have_text(f"Mask #{plain.pk} has its category back.")
    plain.refresh_from_db()
    assert plain.category_id is None

    # A prefilled mask still proposed is labelled from its row, and stays the model's proposal.
    proposed = mask_create(
        image=image,
        rle=rle_of_box(image, (250, 20, 300, 70)),
        source="prefill",
        stage="semi_automatic",
        status="proposed",
    )
    _reload(page)
    row(proposed).locator("select.row-category").select_option(str(car.pk))
    expect(status).to_have_text(f"Mask #{proposed.pk} is now car.")
    proposed.refresh_from_db()
    assert (proposed.category_id, proposed.status, proposed.edit_count) == (car.pk, "proposed", 0)
    expect(row(proposed).locator("select.row-category")).to_have_value(str(car.pk))
    assert console_errors == []


def rle_of_box(image: Any, box: tuple[int, int, int, int]) -> dict[str, Any]:
    """COCO RLE of the rectangle ``(x0, y0, x1, y1)`` on ``image``."""
    pixels = np.zeros((image.height, image.width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(pixels))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
