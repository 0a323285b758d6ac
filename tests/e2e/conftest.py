"""Browser-test fixtures: a web server on the test database, chromium, screenshots on failure.

``live_web`` runs gunicorn (the production server, as ``make run`` does) in a child process on
this test's PostgreSQL database, blob folder and Redis broker, so rows the test writes (with
``transactional_db``: committed) are what the browser sees, and rows the browser's requests
write are what the test then reads. ``browser_context`` launches Debian's chromium headless;
when the test fails, every open page is saved as a PNG under the artifacts folder
(``$E2E_ARTIFACTS_DIR``, else ``<pytest tmp>/artifacts``).
"""

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings
from django.db import connection, connections

from config.celery import app as celery_app
from tests.e2e.test_platform import CHROMIUM, CHROMIUM_ARGS, REPO, _stop, _wait_for_http
from tests.s3server import free_port

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

BIN = REPO / ".venv" / "bin"


@dataclass
class LiveWeb:
    url: str
    log: Path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can tell that the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("E2E_ARTIFACTS_DIR")
    path = Path(configured) if configured else tmp_path_factory.getbasetemp() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def async_unsafe_orm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API keeps an asyncio loop on this thread; let the test use the ORM."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process serving this test's database, blobs and broker
    (with the test settings: their password hasher checks the passwords the test set)."""
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        CELERY_BROKER_URL=str(celery_app.conf.broker_url),
        STORAGE_BACKEND="local",
        BLOB_ROOT=str(settings.BLOB_ROOT),
        MASKLOOP_VAR_DIR=str(settings.VAR_DIR),
        PYTHONUNBUFFERED="1",
        **(extra or {}),
    )
    return env


@pytest.fixture
def live_web(transactional_db: None, tmp_path: Path) -> Iterator[LiveWeb]:
    """gunicorn on the test database (one process: the decode endpoint's mask references live
    in its local-memory cache unless MASKLOOP_CACHE_URL names a shared one)."""
    port = free_port()
    log = tmp_path / "web.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", "1", "--threads", "8", "--timeout", "120"],
            cwd=REPO, env=server_env(), stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_http(f"{url}/accounts/login/", [process], [log])
        yield LiveWeb(url=url, log=log)
    finally:
        _stop(process)


@pytest.fixture
def browser_context(
    request: pytest.FixtureRequest, artifacts_dir: Path, async_unsafe_orm: None
) -> Iterator["BrowserContext"]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing: run `make system-deps` (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        console: list[str] = []
        uncaught: list[str] = []
        refused: list[str] = []  # what the site's Content-Security-Policy blocked

        def on_console(page: Any, message: Any) -> None:
            console.append(f"{message.type}: {message.text}")
            if "Content Security Policy" in message.text:
                refused.append(f"{page.url}: {message.text}")

        def watch(page: Any) -> None:
            page.on("console", lambda message: on_console(page, message))
            page.on("pageerror", lambda error: uncaught.append(f"{page.url}: {error}"))

        context.on("page", watch)
        try:
            yield context
        finally:
            report = getattr(request.node, "report_call", None)
            failed = report is None or report.failed
            if failed:
                print("browser console:\n" + "\n".join(console[-50:]))
                for index, page in enumerate(context.pages):
                    target = artifacts_dir / f"{request.node.name}-{index}.png"
                    try:
                        page.screenshot(path=str(target), full_page=True)
                    except Exception as exc:  # a failed screenshot must not hide the failure
                        print(f"screenshot of page {index} failed: {exc}")
                    else:
                        print(f"screenshot saved: {target}")
            browser.close()
            # ORM calls made while Playwright runs may have opened a connection of their own
            # (another context); close it, or the test database cannot be dropped at the end.
            connections.close_all()
        # A script that throws is a bug even when the test's own checks passed, and so is
        # anything of ours that the site's CSP refuses (a test that provokes a refusal on
        # purpose is marked `csp_refusals`).
        if not failed and uncaught:
            pytest.fail("uncaught exceptions in the browser:\n" + "\n".join(uncaught))
        if not failed and refused and request.node.get_closest_marker("csp_refusals") is None:
            pytest.fail("the Content-Security-Policy refused:\n" + "\n".join(refused))


STATIC_ROOT_IN_CHECKOUT = REPO / "annotation" / "static"


def static_module_page(browser_context: Any, title: str) -> Any:
    """A page at a routed origin that serves the checkout's static files under /static/ (ES
    modules of the tool, imported by `page.evaluate` code) and an empty document elsewhere."""
    page = browser_context.new_page()

    def serve(route: Any) -> None:
        url = route.request.url
        if "/static/" in url:
            path = STATIC_ROOT_IN_CHECKOUT / url.split("/static/", 1)[1]
            if not path.is_file():  # a 404 fails the import; an unanswered route would hang it
                route.fulfill(status=404, body=f"no {path.name}")
                return
            route.fulfill(path=str(path), content_type="text/javascript")
        else:
            route.fulfill(body=f"<!doctype html><title>{title}</title>", content_type="text/html")

    page.route("http://maskloop.test/**", serve)
    page.goto("http://maskloop.test/")
    return page
