"""Going back to the previous image in the real browser (gunicorn, Debian chromium): with
nothing before, the tool says so; after N, "Previous image" reopens the done image with its
mask, and N from there resumes the image left behind. Fails on any console error."""

from typing import Any

import pytest

from annotation.models import Image
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_rounds_page import close_connection, console_errors
from tests.e2e.test_tool import make_setup
from tests.e2e.test_tool_keys import accept_object_at, open_tool

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
__all__ = ["close_connection", "console_errors"]  # fixtures used by name


def test_previous_image_goes_back_to_fix_a_done_image_and_n_resumes_the_one_left(
    live_web: LiveWeb, browser_context: Any, console_errors: list[str], close_connection: None
) -> None:
    from playwright.sync_api import expect

    setup = make_setup([(420, 300), (300, 200)], embed=True)
    first, second = setup.images
    page = browser_context.new_page()
    open_tool(page, live_web, setup, decoder="server")
    tool = page.locator("#tool")
    status = page.locator("#status-message")
    page.click("[data-action=previous]")
    expect(status).to_have_text("No earlier image in this tab.")

    accept_object_at(page, 147, 135, 1)
    page.keyboard.press("n")
    expect(tool).to_have_attribute("data-image-id", str(second.pk))
    expect(tool).to_have_attribute("data-state", "ready")
    page.click("[data-action=previous]")
    expect(tool).to_have_attribute("data-image-id", str(first.pk))
    expect(status).to_contain_text(f"Back on image #{first.pk}, done before")
    expect(tool).to_have_attribute("data-accepted", "1")  # its mask came back with it
    first.refresh_from_db()
    assert first.status == Image.Status.DONE
    # Done again: "next image" resumes the image left behind, still leased to this annotator.
    page.keyboard.press("n")
    expect(tool).to_have_attribute("data-image-id", str(second.pk))
    assert list(second.leases.values_list("user_id", flat=True)) == [setup.user.pk]
    assert console_errors == []
