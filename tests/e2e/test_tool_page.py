"""The annotation tool's page in a real browser: the message shown when someone else holds the
image, and a page exactly as tall as the window. Setup and helpers: test_tool.py."""

import re
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Membership
from annotation.services.leases import image_lease_take
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_tool import PASSWORD, make_setup
from tests.e2e.test_tool_keys import open_tool

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_image_someone_else_holds_says_until_when_in_the_browsers_time(
    live_web: LiveWeb, browser_context: Any
) -> None:
    from playwright.sync_api import expect

    setup = make_setup([(420, 300)], embed=True)
    image = setup.images[0]
    carol = User.objects.create_user("carol", password=PASSWORD)
    Membership.objects.create(user=carol, project=setup.project, role=Membership.Role.ANNOTATOR)
    image_lease_take(image=image, user=carol)
    page = browser_context.new_page()
    open_tool(page, live_web, setup, image=image.pk)

    status = page.locator("#status-message")
    expect(status).to_contain_text("You can look")
    text = status.inner_text()
    assert re.fullmatch(
        rf"Image #{image.pk} is being annotated by carol until [^.]*\d:\d\d[^.]*\. "
        r"You can look, but someone else is working here\.",
        text,
    ), text
    assert not re.search(r"\d{4}-\d\d-\d\dT|UTC", text), text


def test_the_tool_page_is_exactly_as_tall_as_the_window(
    live_web: LiveWeb, browser_context: Any
) -> None:
    """No page scrollbar at either size: the header and the tool fill the window."""
    setup = make_setup([(420, 300)], embed=True)
    page = browser_context.new_page()
    open_tool(page, live_web, setup)
    for width, height in [(1440, 900), (1024, 700)]:
        page.set_viewport_size({"width": width, "height": height})
        heights = page.evaluate(
            """async () => {
                const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
                await frame();
                await frame();
                return [document.documentElement.scrollHeight, window.innerHeight];
            }"""
        )
        assert heights == [height, height], (width, heights)


def test_an_image_removed_while_open_says_so_at_the_next_click_and_accept(
    live_web: LiveWeb, browser_context: Any
) -> None:
    from playwright.sync_api import expect

    from annotation.services.image_removal import images_remove
    from tests.e2e.test_tool import click_image, wait_decoded

    setup = make_setup([(420, 300), (300, 200)], embed=True)
    image = setup.images[0]
    page = browser_context.new_page()
    open_tool(page, live_web, setup, image=image.pk, decoder="server")
    click_image(page, 147, 135)
    wait_decoded(page, 3)
    images_remove(project=setup.project, image_ids=[image.pk], enqueue=False)

    status = page.locator("#status-message")
    click_image(page, 100, 200)
    expect(status).to_contain_text("no longer in the project")
    page.keyboard.press("Enter")  # the mask decoded before the removal: its accept is refused
    expect(status).to_contain_text("Not saved. This image is no longer in the project")
    page.keyboard.press("n")  # the removed image cannot be marked done: the tool moves on
    expect(page.locator("#tool")).to_have_attribute("data-image-id", str(setup.images[1].pk))
    page.wait_for_function("() => document.getElementById('tool').dataset.state === 'ready'")
