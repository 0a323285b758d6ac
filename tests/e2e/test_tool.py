"""The annotation tool in a real browser (Debian chromium, headless, through Playwright).

The web server is gunicorn on the test database (``live_web``); the deployed model is the
golden tiny checkpoint, imported as an admin would (checkpoint + ONNX decoder blobs). The main
flow goes through the real queued path: the tool opens before the image has an embedding, shows
its progress state, and goes live when a real ``gpu``-queue worker has computed it.
"""

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from PIL import Image as PilImage
from pycocotools import mask as mask_utils

from annotation.models import Image, ImageLease, Mask, Membership, Project
from annotation.services.ingest import images_ingest_batch
from engine.models import ModelVersion
from engine.services.embeddings import embeddings_compute
from engine.services.registry import model_version_deploy, model_version_import
from tests.e2e.conftest import LiveWeb
from tests.workers import celery_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GOLDENS = Path(__file__).resolve().parents[1] / "engine" / "sam" / "goldens"
TINY = GOLDENS / "tiny_sam.pth"
OTHER_TINY = GOLDENS / "amg_tiny_sam.pth"
PASSWORD = "annotator-pass-123"
LIVE_TIMEOUT_MS = 120_000
DECODE_TIMEOUT_MS = 30_000


@dataclass
class Setup:
    project: Project
    user: User
    images: list[Image]
    version: ModelVersion


def shapes_png(width: int, height: int, seed: int = 0) -> bytes:
    """A disc and a rectangle on a flat background: objects worth clicking."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:] = rng.integers(20, 90, 3)
    cx, cy, r = width * 0.35, height * 0.45, min(width, height) * 0.2
    pixels[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = (240, 200, 40)
    pixels[
        (xx > width * 0.62) & (xx < width * 0.9) & (yy > height * 0.2) & (yy < height * 0.75)
    ] = (
        30,
        220,
        120,
    )
    out = io.BytesIO()
    PilImage.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def make_setup(sizes: list[tuple[int, int]], *, embed: bool) -> Setup:
    user = User.objects.create_user("ann", password=PASSWORD)
    project = Project.objects.create(name="tool-e2e")
    Membership.objects.create(user=user, project=project, role=Membership.Role.ANNOTATOR)
    files = [(f"img{i}.png", shapes_png(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]
    images = [outcome.image for outcome in images_ingest_batch(project=project, files=files)]
    assert all(image is not None for image in images)
    version = model_version_import(project=project, path_or_file=TINY, name="tiny", deploy=True)
    ingested = [image for image in images if image is not None]
    if embed:
        embeddings_compute(images=ingested, model_version=version)
    return Setup(project=project, user=user, images=ingested, version=version)


def log_in(page, web: LiveWeb, username: str = "ann") -> None:
    page.goto(f"{web.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{web.url}/")


def tool_url(web: LiveWeb, setup: Setup, **query: object) -> str:
    params = "&".join(f"{key}={value}" for key, value in query.items())
    return f"{web.url}/projects/{setup.project.pk}/annotate/" + (f"?{params}" if params else "")


def screen_point(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of the centre of image pixel (x, y) in the tool's current view."""
    return page.evaluate(
        """([x, y]) => {
            const tool = window.maskloopTool;
            const rect = tool.canvas.getBoundingClientRect();
            const [sx, sy] = tool.view.toScreen(x + 0.5, y + 0.5);
            return [rect.left + sx, rect.top + sy];
        }""",
        [x, y],
    )


def click_image(page, x: float, y: float, *, button: str = "left", alt: bool = False) -> None:
    sx, sy = screen_point(page, x, y)
    if alt:
        page.keyboard.down("Alt")
    page.mouse.click(sx, sy, button=button)
    if alt:
        page.keyboard.up("Alt")


def drag_image(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax, ay = screen_point(page, *start)
    bx, by = screen_point(page, *end)
    page.mouse.move(ax, ay)
    page.mouse.down()
    page.mouse.move(bx, by, steps=12)
    page.mouse.up()


def wait_decoded(page, candidates: int) -> None:
    page.wait_for_function(
        """(n) => { const d = document.getElementById('tool').dataset;
                    return d.pending === '0' && d.candidates === String(n); }""",
        arg=candidates,
        timeout=DECODE_TIMEOUT_MS,
    )


def tool_data(page, name: str) -> str:
    return page.locator("#tool").get_attribute(f"data-{name}") or ""


def canvas_pixel(page, x: int, y: int) -> list[int]:
    """RGBA of the tool canvas where image pixel (x, y) is drawn (after the next frame)."""
    return page.evaluate(
        """async ([x, y]) => {
            const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
            await frame();
            await frame();
            const tool = window.maskloopTool;
            const [sx, sy] = tool.view.toScreen(x + 0.5, y + 0.5);
            const dpr = window.devicePixelRatio || 1;
            const ctx = tool.canvas.getContext('2d');
            return [...ctx.getImageData(Math.floor(sx * dpr), Math.floor(sy * dpr), 1, 1).data];
        }""",
        [x, y],
    )


def rle_mask(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})


# --- the whole flow ------------------------------------------------------------------------------


@pytest.fixture
def queued_setup(redis_broker) -> Setup:
    """Two images without embeddings: the tool has to ask for them."""
    return make_setup([(420, 300), (360, 280)], embed=False)


def test_annotate_an_image_from_queued_embedding_to_next_image(
    queued_setup: Setup, live_web: LiveWeb, browser_context, tmp_path: Path
) -> None:
    setup = queued_setup
    first, second = setup.images
    page = browser_context.new_page()
    log_in(page, live_web)
    response = page.goto(tool_url(live_web, setup))
    assert response is not None
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["cross-origin-embedder-policy"] == "require-corp"

    # No embedding yet: the tool shows its progress state until a gpu worker computes it.
    tool = page.locator("#tool")
    from playwright.sync_api import expect

    expect(tool).to_have_attribute("data-state", "waiting-embedding", timeout=30_000)
    expect(page.locator("#tool-wait")).to_be_visible()
    expect(page.locator("#tool-wait-text")).to_contain_text("embedding")
    assert tool_data(page, "image-id") == str(first.pk)
    assert page.evaluate("crossOriginIsolated") is True

    with celery_worker(
        queue="gpu", log=tmp_path / "gpu-worker.log", extra_env={"MASKLOOP_DEVICE": "cpu"}
    ):
        expect(tool).to_have_attribute("data-state", "ready", timeout=LIVE_TIMEOUT_MS)
        expect(page.locator("#tool-wait")).to_be_hidden()
        assert tool_data(page, "decoder") == "browser"
        expect(page.locator("#decoder-path")).to_contain_text("in the browser")

        # Click the disc: three candidates with their predicted IoU, one drawn.
        started = time.monotonic()
        point = (147, 135)
        click_image(page, *point)
        wait_decoded(page, 3)
        expect(page.locator("#candidates .candidate")).to_have_count(3)
        expect(page.locator("#candidates .candidate").first).to_contain_text("IoU")
        assert int(tool_data(page, "mask-area")) > 0
        latencies = page.evaluate("window.maskloopTool.latencies")
        assert len(latencies) == 1
        assert latencies[0]["path"] == "browser"

        # The overlay is drawn: a mask pixel changes colour when the prompts are cleared.
        work = rle_mask(page.evaluate("window.maskloopTool.workRle()"))
        ys, xs = np.nonzero(work)
        nearest = int(np.argmin((xs - point[0]) ** 2 + (ys - point[1]) ** 2))
        inside = (int(xs[nearest]), int(ys[nearest]))  # the mask pixel nearest to the click
        with_overlay = canvas_pixel(page, *inside)
        page.keyboard.press("Escape")
        expect(tool).to_have_attribute("data-mask-area", "0")
        without_overlay = canvas_pixel(page, *inside)
        assert with_overlay != without_overlay
        page.keyboard.press("Control+z")  # brings the cleared prompts back
        wait_decoded(page, 3)

        # Tab cycles the candidates.
        selected = int(tool_data(page, "selected"))
        area_before = tool_data(page, "mask-area")
        page.keyboard.press("Tab")
        assert int(tool_data(page, "selected")) == (selected + 1) % 3
        expect(
            page.locator(f"#candidates .candidate[data-index='{(selected + 1) % 3}']")
        ).to_have_attribute("aria-pressed", "true")
        assert tool_data(page, "mask-area") != area_before

        # A second prompt (Alt+click: negative) gives the single-mask output; undo it.
        click_image(page, 330, 140, alt=True)
        wait_decoded(page, 1)
        page.keyboard.press("Control+z")
        wait_decoded(page, 3)

        # Erase a stroke across the mask.
        area_before_erase = int(tool_data(page, "mask-area"))
        page.keyboard.press("e")
        expect(tool).to_have_attribute("data-mode", "eraser")
        drag_image(page, (inside[0] - 30, inside[1]), (inside[0] + 30, inside[1]))
        area_after_erase = int(tool_data(page, "mask-area"))
        assert 0 < area_after_erase < area_before_erase
        expected_rle = page.evaluate("window.maskloopTool.workRle()")

        # Accept: one row with the mask, its provenance and its timing.
        page.keyboard.press("Enter")
        expect(tool).to_have_attribute("data-accepted", "1")
        elapsed = time.monotonic() - started
        mask = Mask.objects.get(image=first)
        assert np.array_equal(rle_mask(mask.rle), rle_mask(expected_rle))
        assert mask.area == area_after_erase
        assert mask.source == Mask.Source.ASSISTED
        assert mask.model_version_id == setup.version.pk
        assert mask.annotator_id == setup.user.pk
        assert mask.stage == setup.project.stage
        assert mask.clicks == 2  # the undone negative point was work too
        assert mask.brush_strokes == 1
        assert mask.seconds_spent is not None
        assert 0 < mask.seconds_spent <= elapsed + 1
        assert mask.prompts["points"] == [list(point)]
        assert mask.prompts["labels"] == [1]
        assert mask.prompts["decoder"] == "browser"
        kinds = [event["kind"] for event in mask.prompts["history"]]
        assert kinds.count("point") == 2
        assert "eraser" in kinds
        assert "undo" in kinds
        assert mask.idempotency_key
        expect(page.locator("#accepted-list li")).to_have_count(1)

        # Undo the accept: the row goes, the mask is back in the editor; accept it again.
        page.keyboard.press("Control+z")
        expect(tool).to_have_attribute("data-accepted", "0")
        assert not Mask.objects.filter(image=first).exists()
        assert int(tool_data(page, "mask-area")) == area_after_erase
        page.keyboard.press("Enter")
        expect(tool).to_have_attribute("data-accepted", "1")
        again = Mask.objects.get(image=first)
        assert again.idempotency_key != mask.idempotency_key

        # N: this image is done, the next one is leased to us and goes live (queued again).
        page.keyboard.press("n")
        expect(tool).to_have_attribute("data-image-id", str(second.pk), timeout=30_000)
        first.refresh_from_db()
        assert first.status == Image.Status.DONE
        assert ImageLease.objects.filter(
            image=second, user=setup.user, expires_at__gt=timezone.now()
        ).exists()
        expect(tool).to_have_attribute("data-state", "ready", timeout=LIVE_TIMEOUT_MS)
        assert page.url.endswith(f"image={second.pk}")
        page.keyboard.press("p")  # the eraser stays chosen across images; back to prompts
        click_image(page, 120, 120)
        wait_decoded(page, 3)


# --- decoding paths (browser vs server parity: test_browser_decoding.py) ----------------------


def test_without_webassembly_the_tool_decodes_on_the_server(
    live_web: LiveWeb, browser_context
) -> None:
    setup = make_setup([(420, 300)], embed=True)
    page = browser_context.new_page()
    page.add_init_script("delete globalThis.WebAssembly;")
    log_in(page, live_web)
    page.goto(tool_url(live_web, setup))
    page.wait_for_function("() => document.getElementById('tool').dataset.state === 'ready'")
    assert tool_data(page, "decoder") == "server"
    from playwright.sync_api import expect

    expect(page.locator("#decoder-path")).to_have_text("on the server")
    expect(page.locator("#decoder-note")).to_contain_text("no WebAssembly")
    click_image(page, 147, 135)
    wait_decoded(page, 3)
    click_image(page, 100, 200)  # second point: the server's mask_ref feeds the logits back
    wait_decoded(page, 1)
    assert int(tool_data(page, "mask-area")) > 0
    assert page.evaluate("window.maskloopTool.latencies.map((l) => l.path)") == ["server"] * 2


def test_a_deleted_model_version_says_so_and_reloads_the_deployed_one(
    live_web: LiveWeb, browser_context
) -> None:
    setup = make_setup([(420, 300)], embed=True)
    page = browser_context.new_page()
    log_in(page, live_web)
    page.goto(tool_url(live_web, setup, decoder="server"))
    page.wait_for_function("() => document.getElementById('tool').dataset.state === 'ready'")
    assert tool_data(page, "version-id") == str(setup.version.pk)

    replacement = model_version_import(
        project=setup.project, path_or_file=OTHER_TINY, name="tiny-2"
    )
    model_version_deploy(project=setup.project, version=replacement)
    embeddings_compute(images=setup.images, model_version=replacement)
    ModelVersion.objects.filter(pk=setup.version.pk).delete()

    click_image(page, 147, 135)
    from playwright.sync_api import expect

    expect(page.locator("#status-message")).to_contain_text("was removed")
    expect(page.locator("#tool")).to_have_attribute("data-version-id", str(replacement.pk))
    page.wait_for_function("() => document.getElementById('tool').dataset.state === 'ready'")
    expect(page.locator("#model-name")).to_contain_text("tiny-2")
    click_image(page, 147, 135)
    wait_decoded(page, 3)


def test_a_large_image_zooms_pans_and_takes_prompts(live_web: LiveWeb, browser_context) -> None:
    setup = make_setup([(6000, 4000)], embed=True)
    page = browser_context.new_page()
    log_in(page, live_web)
    page.goto(tool_url(live_web, setup))
    page.wait_for_function(
        "() => document.getElementById('tool').dataset.state === 'ready'", timeout=LIVE_TIMEOUT_MS
    )
    fitted = page.evaluate("({...window.maskloopTool.view})")
    assert fitted["scale"] < 0.25  # the whole 6000 x 4000 image fits the canvas

    sx, sy = screen_point(page, 2100, 1800)
    page.mouse.move(sx, sy)
    page.mouse.wheel(0, -600)  # zoom in at the cursor: that image point stays under it
    page.wait_for_function(f"() => window.maskloopTool.view.scale > {fitted['scale'] * 1.5}")
    after = screen_point(page, 2100, 1800)
    assert abs(after[0] - sx) < 2
    assert abs(after[1] - sy) < 2

    view = page.evaluate("({...window.maskloopTool.view})")
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(sx + 120, sy + 80, steps=5)
    page.mouse.up()
    page.keyboard.up(" ")
    panned = page.evaluate("({...window.maskloopTool.view})")
    assert panned["tx"] == pytest.approx(view["tx"] + 120, abs=1)
    assert panned["ty"] == pytest.approx(view["ty"] + 80, abs=1)
    assert tool_data(page, "pending") == "0"
    assert tool_data(page, "candidates") == "0"

    click_image(page, 2100, 1800)
    wait_decoded(page, 3)
    assert int(tool_data(page, "mask-area")) > 0
    page.keyboard.press("f")
    assert page.evaluate("window.maskloopTool.view.scale") == pytest.approx(fitted["scale"])


def test_the_tool_page_is_for_project_members_and_cross_origin_isolated(client) -> None:
    setup = make_setup([(42, 30)], embed=False)
    url = f"/projects/{setup.project.pk}/annotate/"
    assert client.get(url).status_code == 302  # to the login page
    User.objects.create_user("outsider", password=PASSWORD)
    client.login(username="outsider", password=PASSWORD)
    assert client.get(url).status_code == 404
    client.login(username="ann", password=PASSWORD)
    response = client.get(f"{url}?image={setup.images[0].pk}&decoder=server")
    assert response.status_code == 200
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert f'data-image-id="{setup.images[0].pk}"' in response.text
    assert 'data-decoder="server"' in response.text
    assert client.get(f"{url}?image=x&decoder=evil").context["decoder"] == "auto"
