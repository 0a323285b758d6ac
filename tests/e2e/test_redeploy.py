"""Hot redeploy across processes and in the annotation tool (real gunicorn, real chromium).

A promotion made in this (test) process is served by the gunicorn process on its very next
request, without a restart: the endpoints read the project's deployed version from the database
on every request and the per-process model / embedding caches are keyed by version id. In the
browser, the tool polls the live version, shows "Model v<N> is live — masks now come from it",
and switches at once when no mask is in progress, else after the current mask.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from annotation.models import Mask, Project
from engine.models import ModelVersion
from engine.sam.checkpoint import file_sha256, read_checkpoint
from engine.services.embeddings import embeddings_compute
from engine.services.registry import checkpoint_key
from storage.blobs import get_blob_store
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_tool import (
    OTHER_TINY,
    PASSWORD,
    Setup,
    click_image,
    log_in,
    make_setup,
    rle_mask,
    tool_data,
    tool_url,
    wait_decoded,
)
from training.services.promotion import version_promote, version_rollback

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

POINT = (147, 135)  # on the disc of test_tool.shapes_png


@pytest.fixture
def two_versions(redis_broker) -> tuple[Setup, ModelVersion]:
    """The tool's setup (tiny deployed, embedded) and a second checkpoint, embedded too."""
    setup = make_setup([(420, 300)], embed=True)
    other = register_without_onnx(setup.project, OTHER_TINY, name="tiny-2")
    embeddings_compute(images=setup.images, model_version=other)
    return setup, other


def register_without_onnx(project: Project, path: Path, *, name: str) -> ModelVersion:
    """A checkpoint registered as the registry does, minus the ONNX export (these tests decode
    on the server; the export costs seconds the 2-core test machine does not have)."""
    sha256 = file_sha256(path)
    with path.open("rb") as handle:
        get_blob_store().put_file(checkpoint_key(sha256), handle)
    loaded = read_checkpoint(path)
    return ModelVersion.objects.create(
        project=project, name=name, arch=loaded.arch, config=loaded.config.to_dict(),
        checkpoint_key=checkpoint_key(sha256), sha256=sha256,
    )  # fmt: skip


def api_session(web: LiveWeb) -> requests.Session:
    session = requests.Session()
    token = session.post(
        f"{web.url}/api/auth/token/", data={"username": "ann", "password": PASSWORD}, timeout=30
    ).json()["token"]
    session.headers["Authorization"] = f"Token {token}"
    return session


def decode(session: requests.Session, web: LiveWeb, image_id: int, **extra: int) -> dict:
    body: dict[str, Any] = {"points": [list(POINT)], "labels": [1], "multimask": False, **extra}
    response = session.post(f"{web.url}/api/images/{image_id}/decode/", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_promotion_here_is_served_by_the_web_process_on_its_next_request(
    two_versions, live_web: LiveWeb
) -> None:
    setup, other = two_versions
    [image] = setup.images
    session = api_session(live_web)
    before = decode(session, live_web, image.pk)  # loads the first model in gunicorn
    assert before["model_version"] == setup.version.pk
    embedding_url = f"{live_web.url}/api/images/{image.pk}/embedding/"
    assert session.get(embedding_url, timeout=30).json()["model_version"]["id"] == setup.version.pk

    version_promote(version=other, user=None, reason="e2e")  # this process, committed

    after = decode(session, live_web, image.pk)
    assert after["model_version"] == other.pk
    assert session.get(embedding_url, timeout=30).json()["model_version"]["id"] == other.pk
    # The masks are the new model's: the same as naming it, not the same as the old one.
    named = decode(session, live_web, image.pk, model_version=other.pk)
    assert after["masks"][0]["rle"] == named["masks"][0]["rle"]
    assert after["masks"][0]["rle"] != before["masks"][0]["rle"]
    live = session.get(f"{live_web.url}/api/projects/{setup.project.pk}/deployed-version/")
    assert live.json()["deployed_version"]["id"] == other.pk

    version_rollback(project=setup.project, user=None)
    assert decode(session, live_web, image.pk)["model_version"] == setup.version.pk


def test_the_tool_announces_a_new_model_and_switches_after_the_current_mask(
    two_versions, live_web: LiveWeb, browser_context
) -> None:
    from playwright.sync_api import expect

    setup, other = two_versions
    page = browser_context.new_page()
    log_in(page, live_web)
    page.goto(tool_url(live_web, setup, decoder="server", deploy_poll_ms=700))
    tool = page.locator("#tool")
    expect(tool).to_have_attribute("data-state", "ready", timeout=60_000)
    assert tool_data(page, "version-id") == str(setup.version.pk)
    expect(page.locator("#model-live-banner")).to_be_hidden()

    # A mask is in progress when the new model goes live: announced, but not switched yet.
    click_image(page, *POINT)
    wait_decoded(page, 3)
    version_promote(version=other, user=None, reason="e2e")
    banner = page.locator("#model-live-banner")
    expect(banner).to_be_visible(timeout=15_000)
    expect(banner).to_contain_text(f"Model v{other.pk} (tiny-2) is live — masks now come from it")
    page.wait_for_timeout(2_000)  # several polls
    assert tool_data(page, "version-id") == str(setup.version.pk)
    page.keyboard.press("Enter")
    expect(tool).to_have_attribute("data-accepted", "1")
    first = Mask.objects.get(image=setup.images[0])
    assert first.model_version_id == setup.version.pk  # made with the model it was started on

    # Nothing in progress now: the next poll switches; the next mask comes from the new model.
    expect(tool).to_have_attribute("data-version-id", str(other.pk), timeout=15_000)
    expect(tool).to_have_attribute("data-state", "ready", timeout=60_000)
    expect(page.locator("#model-name")).to_contain_text("tiny-2")
    click_image(page, *POINT)
    wait_decoded(page, 3)
    page.keyboard.press("Enter")
    expect(tool).to_have_attribute("data-accepted", "2")
    second = Mask.objects.exclude(pk=first.pk).get(image=setup.images[0])
    assert second.model_version_id == other.pk
    assert np.any(rle_mask(second.rle))

    page.locator("#model-live-dismiss").click()
    expect(banner).to_be_hidden()
