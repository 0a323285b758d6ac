"""Skipping an image in the real browser (gunicorn, Debian chromium): the annotator presses S,
Esc closes the box without a change, a reason is required, a preset fills it, and the skip
moves on to the next image with the database row skipped; a reviewer then reopens the image
from the project page. Fails on any console error."""

from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Image, Membership
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_rounds_page import close_connection, console_errors
from tests.e2e.test_tool import PASSWORD, make_setup
from tests.e2e.test_tool_keys import open_tool

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
__all__ = ["close_connection", "console_errors"]  # fixtures used by name


def test_an_annotator_skips_an_image_and_a_reviewer_reopens_it(
    live_web: LiveWeb,
    browser_context: Any,
    console_errors: list[str],
    close_connection: None,
) -> None:
    from playwright.sync_api import expect

    setup = make_setup([(420, 300), (300, 200)], embed=True)
    first, second = setup.images
    page = browser_context.new_page()
    open_tool(page, live_web, setup)
    tool = page.locator("#tool")
    expect(tool).to_have_attribute("data-image-id", str(first.pk))
    overlay = page.locator("#skip-overlay")

    page.keyboard.press("s")
    expect(overlay).to_be_visible()
    expect(page.locator("#skip-reason")).to_be_focused()
    expect(page.locator("#skip-reason")).to_have_value("")  # the S did not type itself
    page.keyboard.press("Escape")
    expect(overlay).to_be_hidden()
    page.keyboard.press("s")  # Esc also closes it with the focus outside the field
    page.click("#skip-overlay h2")
    page.keyboard.press("Escape")
    expect(overlay).to_be_hidden()
    first.refresh_from_db()
    assert first.status == Image.Status.TODO

    page.click("[data-action=skip]")
    page.click("#skip-submit")  # no reason yet
    expect(page.locator("#skip-error")).to_contain_text("Say why")
    page.click("[data-skip-reason='Duplicate of another image']")
    expect(page.locator("#skip-error")).to_have_text("")  # a reason now: the hint goes
    page.keyboard.press("Enter")  # submits the box; the tool's Enter (accept) stays out of it
    expect(overlay).to_be_hidden()
    expect(tool).to_have_attribute("data-image-id", str(second.pk))
    expect(page.locator("#status-message")).to_contain_text(f"Image #{first.pk} skipped")
    first.refresh_from_db()
    assert (first.status, first.skip_reason, first.skipped_by_id) == (
        Image.Status.SKIPPED,
        "Duplicate of another image",
        setup.user.pk,
    )

    reviewer = User.objects.create_user("rita", password=PASSWORD)
    Membership.objects.create(user=reviewer, project=setup.project, role=Membership.Role.REVIEWER)
    page.context.clear_cookies()
    page.goto(f"{live_web.url}/accounts/login/")
    page.fill("#id_username", "rita")
    page.fill("#id_password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{live_web.url}/")
    page.goto(f"{live_web.url}/projects/{setup.project.pk}/?status=skipped")
    tile = page.locator(f'li[data-image="{first.pk}"]')
    expect(tile.locator(".tile-status")).to_have_attribute(
        "title", "skipped by ann: Duplicate of another image"
    )
    expect(page.locator("[data-remove-images]")).to_have_count(0)  # admins only
    tile.locator("input.tile-select").check()
    page.click("[data-reopen-images]")
    expect(page.locator("body")).to_contain_text("Reopened 1 image")
    first.refresh_from_db()
    assert (first.status, first.skip_reason) == (Image.Status.TODO, "")
    assert console_errors == []


def test_a_refused_skip_says_why_in_the_box_and_changes_nothing(
    live_web: LiveWeb, browser_context: Any, console_errors: list[str], close_connection: None
) -> None:
    from playwright.sync_api import expect

    from annotation.services.leases import image_mark_done

    setup = make_setup([(420, 300)], embed=True)
    (image,) = setup.images
    image_mark_done(image=image, user=setup.user)
    page = browser_context.new_page()
    open_tool(page, live_web, setup, image=image.pk)
    page.keyboard.press("s")
    page.fill("#skip-reason", "out of scope")
    page.click("#skip-submit")
    expect(page.locator("#skip-error")).to_contain_text("is done; a reviewer can skip it")
    expect(page.locator("#skip-overlay")).to_be_visible()
    image.refresh_from_db()
    assert (image.status, image.skip_reason) == (Image.Status.DONE, "")
    # The 409 is the answer the box shows, not a script error.
    assert [text for text in console_errors if "409" not in text] == []
