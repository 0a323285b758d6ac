"""The whole platform on its embedded defaults, driven by a real browser.

Started as ``make run`` starts it — migrate, collectstatic, seed_demo, then one Celery worker
on both queues and gunicorn — in a temporary ``MASKLOOP_VAR_DIR`` with ``DATABASE_URL`` and
``CELERY_BROKER_URL`` unset, so it runs on SQLite, local blobs and the folder broker. Debian's
chromium (``make system-deps``) logs in with the printed credentials, sees the demo project,
uploads an image, exports COCO, waits for the job and checks the downloaded file.
"""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PilImage
from pycocotools.coco import COCO

from annotation.management.commands.seed_demo import demo_labelled
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOGIN_LINE = re.compile(r"Log in at (\S+) as (\S+) / (\S+)")
MASK_COUNT = re.compile(r"(\d+) accepted masks")
EXPORT_TIMEOUT_MS = 180_000


@dataclass
class Platform:
    url: str
    username: str
    password: str
    demo_masks: int
    var_dir: Path


def _platform_env(var_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    for name in ("STORAGE_BACKEND", "BLOB_ROOT", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    env.update(
        MASKLOOP_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="config.settings",
        HOST="127.0.0.1",
        PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # A session of its own: teardown signals exactly this process group.
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes], *, grace: float = 20) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _wait_for_http(url: str, processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited early:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within 60 s")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing: run `make system-deps` (apt-get install chromium)")
    var_dir = tmp_path_factory.mktemp("platform-var")
    port = free_port()
    env = _platform_env(var_dir, port)
    _manage(env, "migrate", "--noinput", "-v", "0")
    _manage(env, "collectstatic", "--noinput", "-v", "0")
    seeded = _manage(env, "seed_demo")
    login = LOGIN_LINE.search(seeded)
    masks = MASK_COUNT.search(seeded)
    assert login is not None, seeded
    assert masks is not None, seeded
    (var_dir / "celery-broker").mkdir(exist_ok=True)
    logs = [var_dir / "worker.log", var_dir / "web.log"]
    worker = _start(
        [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            "default,gpu",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "--hostname",
            f"e2e-{uuid.uuid4().hex[:8]}@%h",
        ],
        env,
        logs[0],
    )
    web = _start(
        [
            str(BIN / "gunicorn"),
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--timeout",
            "120",
        ],
        env,
        logs[1],
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_http(f"{url}/accounts/login/", [worker, web], logs)
        yield Platform(
            url=url,
            username=login.group(2),
            password=login.group(3),
            demo_masks=int(masks.group(1)),
            var_dir=var_dir,
        )
    finally:
        _stop(web)
        # A warm shutdown would wait for the demo's embedding tasks the test no longer needs
        # (about 20 s); its temporary folder goes away anyway.
        _stop(worker, grace=2)


def _new_png() -> bytes:
    rng = np.random.default_rng(424242)
    pixels = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    out = io.BytesIO()
    PilImage.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


LABELLED = [index for index in range(24) if demo_labelled(index)]


def test_log_in_browse_upload_and_export_coco(platform: Platform, tmp_path: Path) -> None:
    from playwright.sync_api import FilePayload, expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(
                accept_downloads=True, viewport={"width": 1400, "height": 1000}
            )
            page = context.new_page()
            page.goto(f"{platform.url}/")
            expect(page).to_have_url(re.compile(r"/accounts/login/"))
            page.fill("#id_username", platform.username)
            page.fill("#id_password", platform.password)
            page.click("form button[type=submit]")

            table = page.locator("#project-table")
            expect(table).to_contain_text("demo")
            expect(table.locator("[data-count=images]")).to_have_text("24")
            page.click("#project-table a:text-is('demo')")

            grid = page.locator("#image-grid .tile")
            expect(grid).to_have_count(24)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#image-grid img')].slice(0, 6)"
                ".every(img => img.complete && img.naturalWidth > 0)",
                timeout=30_000,
            )

            upload: FilePayload = {
                "name": "browser-upload.png",
                "mimeType": "image/png",
                "buffer": _new_png(),
            }
            page.set_input_files("input[name=files]", files=[upload])
            page.click("form[action$='/upload/'] button[type=submit]")
            expect(page.locator(".message-success")).to_contain_text("Imported 1 image")
            expect(page.locator(".stat [data-count=images]")).to_have_text("25")

            page.click("button[data-export=coco]")
            expect(page.locator(".message-success")).to_contain_text("COCO export started")
            row = page.locator("#jobs-table tr[data-job]").first
            expect(row).to_have_attribute("data-status", "succeeded", timeout=EXPORT_TIMEOUT_MS)

            with page.expect_download() as download_info:
                row.locator("a.file-link").first.click()
            download = download_info.value
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)

            # The export imported back through the page's COCO form: every mask is there.
            page.set_input_files("input[name=annotations]", files=[str(saved)])
            page.click("#coco-import button[type=submit]")
            imported_back = page.locator(".message-success")
            expect(imported_back).to_contain_text(
                f"Imported 0 masks onto {len(LABELLED)} images, "
                f"{platform.demo_masks} already in the project"
            )
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(tmp_path / "project-page.png"), full_page=True)
        finally:
            browser.close()

    assert saved.name == "demo-coco.json"
    coco = json.loads(saved.read_text())
    # Only images with masks are exported: the labelled half of the demo, not the upload.
    assert len(coco["images"]) == sum(demo_labelled(index) for index in range(24))
    assert len(coco["annotations"]) == platform.demo_masks
    assert {a["iscrowd"] for a in coco["annotations"]} == {0}
    loaded = COCO(str(saved))
    assert len(loaded.getAnnIds()) == platform.demo_masks
    assert (tmp_path / "project-page.png").stat().st_size > 10_000
