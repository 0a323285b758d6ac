"""The review queue's keyboard in a real browser: keys with Ctrl/Cmd/Alt are the browser's,
letters work in either case, the fix toolbar's radios and slider do not swallow the shortcuts,
a focused button keeps Enter, and the key labels on the toolbar's buttons are readable.
Setup and helpers: test_review.py."""

from typing import Any

import pytest
from django.contrib.auth.models import User
from pycocotools import mask as mask_utils

from annotation.models import Mask, Membership
from annotation.services.review import mask_reject
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_review import (
    HEIGHT,
    WIDTH,
    closes_its_connection,
    log_in,
    make_setup,
    screen_point,
    wait_drawn,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# WCAG contrast ratio of an element's text against what is drawn behind it.
CONTRAST = """(selector) => {
    const rgba = (css) => {
        const v = css.match(/[\\d.]+/g).map(Number);
        return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1];
    };
    const element = document.querySelector(selector);
    const layers = [];
    for (let e = element; e; e = e.parentElement) {
        const background = rgba(getComputedStyle(e).backgroundColor);
        if (background[3] > 0) layers.push(background);
        if (background[3] === 1) break;
    }
    let under = [255, 255, 255];
    for (const [r, g, b, a] of layers.reverse()) {
        under = [r, g, b].map((c, i) => c * a + under[i] * (1 - a));
    }
    const luminance = (rgb) => {
        const [r, g, b] = rgb.map((c) => {
            c /= 255;
            return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const [hi, lo] = [luminance(rgba(getComputedStyle(element).color)), luminance(under)]
        .sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
}"""


def review_page(web: LiveWeb, browser_context: Any, setup: Any) -> Any:
    page = browser_context.new_page()
    log_in(page, web, "rita")
    page.goto(f"{web.url}/projects/{setup.project.pk}/review/")
    wait_drawn(page, setup.images[0], 2)
    return page


def start_fix(page: Any, key: str = "f") -> None:
    """Press the fix key and wait for the fix toolbar."""
    page.keyboard.press(key)
    page.wait_for_selector("#fix-toolbar:not([hidden])")


def focused_mask(page: Any) -> int:
    return int(page.locator(".mask-row.is-focus").get_attribute("data-mask-id") or 0)


def drag(page: Any, start: tuple[int, int], end: tuple[int, int]) -> None:
    page.mouse.move(*screen_point(page, *start))
    page.mouse.down()
    page.mouse.move(*screen_point(page, *end), steps=10)
    page.mouse.up()


@closes_its_connection
def test_modified_keys_are_the_browsers_and_letters_work_in_either_case(
    live_web: LiveWeb, browser_context: Any
) -> None:
    setup = make_setup()
    first, second, _ = setup.masks
    page = review_page(live_web, browser_context, setup)
    page.evaluate(
        """() => {
            window.letters = [];
            window.addEventListener('keydown', (e) => {
                if (e.key.length === 1) window.letters.push(`${e.key}:${e.defaultPrevented}`);
            });
        }"""
    )
    for combo in ["Control+a", "Control+f", "Control+r", "Alt+r", "Meta+a", "Control+j"]:
        page.keyboard.press(combo)
    # Nothing taken: no approval, no fix toolbar, no rejection form, focus unchanged.
    assert page.evaluate("window.letters") == [f"{k}:false" for k in "afrraj"]
    assert page.locator(".mask-row").count() == 3
    assert page.locator("#fix-toolbar").is_hidden()
    assert page.locator(".reject-form:not([hidden])").count() == 0
    assert focused_mask(page) == first.pk
    first.refresh_from_db()
    assert first.reviewed_at is None

    # Upper case (Shift, Caps Lock) works as lower case.
    page.keyboard.press("J")
    assert focused_mask(page) == second.pk
    page.keyboard.press("Shift+A")
    page.locator(f".mask-row[data-mask-id='{second.pk}']").wait_for(state="detached")
    second.refresh_from_db()
    assert second.reviewed_by == setup.reviewer
    assert second.status == Mask.Status.ACCEPTED


@closes_its_connection
def test_the_key_labels_on_the_fix_toolbars_buttons_are_readable(
    live_web: LiveWeb, browser_context: Any
) -> None:
    """WCAG AA (4.5:1), on the primary (dark) Save fix button as on the light Cancel button."""
    page = review_page(live_web, browser_context, make_setup())
    start_fix(page)
    assert page.evaluate(CONTRAST, "#fix-save kbd") >= 4.5
    assert page.evaluate(CONTRAST, "#fix-cancel kbd") >= 4.5


@closes_its_connection
def test_fix_keys_work_after_a_click_on_the_toolbars_radios_and_slider(
    live_web: LiveWeb, browser_context: Any
) -> None:
    setup = make_setup()
    first = setup.masks[0]
    page = review_page(live_web, browser_context, setup)
    start_fix(page)

    # After a click on the Eraser radio, B still picks the brush; after a click on the slider,
    # ] still makes it larger.
    page.click("#fix-toolbar input[value=eraser]")
    page.keyboard.press("b")
    assert page.is_checked("#fix-toolbar input[value=brush]")
    page.click("#fix-size")
    size = int(page.input_value("#fix-size"))
    page.keyboard.press("]")
    assert int(page.input_value("#fix-size")) == size + 4

    # Paint out of mask A to the right, click the Brush radio, and Enter saves the fix.
    drag(page, (100, 100), (160, 100))
    page.click("#fix-toolbar input[value=brush]")
    page.keyboard.press("Enter")
    page.locator(f".mask-row[data-mask-id='{first.pk}']").wait_for(state="detached")
    first.refresh_from_db()
    assert first.reviewed_by == setup.reviewer
    fixed = mask_utils.decode({"size": [HEIGHT, WIDTH], "counts": first.rle_counts.encode()})
    assert fixed[100, 150] == 1


@closes_its_connection
def test_enter_on_the_focused_cancel_button_cancels_the_fix(
    live_web: LiveWeb, browser_context: Any
) -> None:
    """A focused button keeps Enter for itself: the painted fix is dropped, not saved."""
    setup = make_setup()
    first = setup.masks[0]
    page = review_page(live_web, browser_context, setup)
    start_fix(page, "F")
    drag(page, (100, 100), (160, 100))
    page.focus("#fix-cancel")
    page.keyboard.press("Enter")
    page.wait_for_selector("#fix-toolbar", state="hidden")
    assert page.locator(f".mask-row[data-mask-id='{first.pk}']").count() == 1
    first.refresh_from_db()
    assert first.reviewed_at is None


@closes_its_connection
def test_approve_all_takes_the_images_listed_masks_and_opens_the_next(
    live_web: LiveWeb, browser_context: Any
) -> None:
    """Shift+Enter approves both masks of the first image in one request and the queue moves
    on; Ctrl+Z takes that back; a mask rejected meanwhile by a co-reviewer is left alone and
    says why; the button approves the rest."""
    from playwright.sync_api import expect

    setup = make_setup()
    first, second, third = setup.masks
    page = review_page(live_web, browser_context, setup)
    page.keyboard.press("Shift+Enter")
    wait_drawn(page, setup.images[1], 1)
    expect(page.locator("#review-live")).to_have_text("2 masks approved.")
    for mask in (first, second):
        mask.refresh_from_db()
        assert (mask.status, mask.reviewed_by_id) == (Mask.Status.ACCEPTED, setup.reviewer.pk)
    # Ctrl+Z takes the approve-all back: both masks are in the queue again (the page reloads).
    expect(page.locator("#review-undo-text")).to_have_text("2 masks approved.")
    page.keyboard.press("Control+z")
    page.wait_for_load_state("load")
    wait_drawn(page, setup.images[0], 2)
    expect(page.locator("#review-undo-bar")).to_be_hidden()
    for mask in (first, second):
        mask.refresh_from_db()
        assert (mask.status, mask.reviewed_at) == (Mask.Status.ACCEPTED, None)
    page.keyboard.press("Shift+Enter")
    wait_drawn(page, setup.images[1], 1)

    # The second image's mask is rejected in another tab: approving all leaves it as it is.
    carl = User.objects.create_user("carl", password="carl-pass-123")
    Membership.objects.create(user=carl, project=setup.project, role=Membership.Role.REVIEWER)
    mask_reject(mask=third, reviewer=carl, reason="leaks into the background")
    page.click(f".review-image[data-image-id='{setup.images[1].pk}'] [data-action=approve-all]")
    row = page.locator(f".mask-row[data-mask-id='{third.pk}']")
    expect(row.locator(".row-error")).to_contain_text("this mask is rejected now")
    expect(page.locator("#review-live")).to_have_text(
        "0 masks approved; 1 no longer accepted, left as they are."
    )
    third.refresh_from_db()
    assert (third.status, third.reviewed_by_id) == (Mask.Status.REJECTED, carl.pk)
