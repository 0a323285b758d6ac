"""Removing images from the project page in a real browser (gunicorn, Debian chromium): an admin
ticks two tiles (one by one, then with "select all" less one), confirms and removes them; the
page says so, the grid no longer shows them and the database has lost their rows and masks.
Fails on any console error."""

from typing import Any

import pytest

from annotation.models import Image, Mask, Project
from engine.models import Job
from tests.annotation.test_export import add_image
from tests.annotation.test_image_removal import with_masks
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_rounds_page import close_connection, console_errors, log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
__all__ = ["close_connection", "console_errors"]  # fixtures used by name


def test_an_admin_removes_ticked_images(
    live_web: LiveWeb,
    browser_context: Any,
    project: Project,
    console_errors: list[str],
    close_connection: None,
) -> None:
    images = [add_image(project, 40, 30, seed) for seed in range(3)]
    with_masks(images[0], 2)
    page = browser_context.new_page()
    log_in(page, live_web, "alice")
    page.goto(f"{live_web.url}/projects/{project.pk}/")
    for image in images[:2]:
        page.check(f'li[data-image="{image.pk}"] input.tile-select')
    page.click("[data-remove-images]")
    # Not confirmed: nothing goes, the page asks for the box.
    page.wait_for_selector("text=Tick the box to confirm")
    assert Image.objects.count() == 3
    counter = page.locator("[data-selected-count]")
    assert counter.inner_text() == "0 selected"
    page.check("[data-select-all]")  # every tile of the page, then one left out again
    assert counter.inner_text() == "3 selected"
    page.uncheck(f'li[data-image="{images[2].pk}"] input.tile-select')
    assert counter.inner_text() == "2 selected"
    assert not page.is_checked("[data-select-all]")
    page.check('#image-selection-form input[name="confirm"]')
    page.click("[data-remove-images]")
    page.wait_for_selector("text=Removed 2 images and 2 masks")
    tiles = page.eval_on_selector_all(
        "#image-grid li[data-image]", "els => els.map(e => e.dataset.image)"
    )
    assert tiles == [str(images[2].pk)]
    assert list(Image.objects.values_list("pk", flat=True)) == [images[2].pk]
    assert not Mask.objects.exists()
    assert Job.objects.get(kind="remove_images").result["images"] == 2
    assert console_errors == []
