"""The Content-Security-Policy header (config/csp.py, django-csp) through Django's test client:
on pages and API answers, in the three MASKLOOP_CSP modes, with the S3 store's origin allowed
for images when blobs are served from presigned URLs, and the API docs page free of inline
script and style. The browser side (pages load with nothing refused, an injected script does
not run, framing is refused) is tests/e2e/test_csp.py."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.test import Client, override_settings

from annotation.models import Project
from config.csp import _blob_origin, blob_origin, policy, policy_settings
from storage.blobs import reset_blob_store
from storage.blobs.s3 import S3BlobStore

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]
CSP = "Content-Security-Policy"


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_pages_and_api_answers_carry_the_policy(project: Project, admin_user: User) -> None:
    client = logged_in(admin_user)
    for url in (
        "/accounts/login/",
        "/",
        f"/projects/{project.pk}/",
        f"/api/projects/{project.pk}/",
    ):
        response = (Client() if "login" in url else client).get(url)
        assert response.status_code == 200, url
        found = directives(response[CSP])
        assert found["script-src"] == ["'self'", "'wasm-unsafe-eval'"], url
        assert found["default-src"] == ["'self'"]
        assert found["object-src"] == ["'none'"]
        assert found["frame-ancestors"] == ["'none'"]
        assert found["img-src"] == ["'self'", "data:", "blob:"]  # the local store: no origin
        assert "'unsafe-inline'" not in found["style-src"] + found["script-src"]
        assert "Content-Security-Policy-Report-Only" not in response


def test_report_only_mode_sends_the_policy_as_a_report(admin_user: User) -> None:
    enforced, reported = policy_settings("report-only")
    with override_settings(
        CONTENT_SECURITY_POLICY=enforced, CONTENT_SECURITY_POLICY_REPORT_ONLY=reported
    ):
        response = logged_in(admin_user).get("/")
    assert CSP not in response
    assert "'wasm-unsafe-eval'" in response["Content-Security-Policy-Report-Only"]


def test_off_mode_sends_no_policy(admin_user: User) -> None:
    with override_settings(CONTENT_SECURITY_POLICY=None, CONTENT_SECURITY_POLICY_REPORT_ONLY=None):
        response = logged_in(admin_user).get("/")
    assert CSP not in response
    assert "Content-Security-Policy-Report-Only" not in response


def test_modes() -> None:
    assert policy_settings("enforce") == (policy(), None)
    assert policy_settings("report-only") == (None, policy())
    assert policy_settings("off") == (None, None)
    with pytest.raises(ValueError, match="enforce, report-only, off"):
        policy_settings("strict")


def test_an_unknown_mode_stops_the_settings_with_a_clear_error() -> None:
    env = {**os.environ, "MASKLOOP_CSP": "strict", "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "ImproperlyConfigured: MASKLOOP_CSP='strict'" in done.stderr


S3_SETTINGS = {
    "STORAGE_BACKEND": "s3",
    "S3_BUCKET": "maskloop-blobs",
    "S3_PREFIX": "",
    "S3_REGION": "eu-west-1",
}


@pytest.fixture
def s3_store_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Credentials for signing (signing is local: nothing is sent anywhere)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "csp-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "csp-test-secret")
    reset_blob_store()
    _blob_origin.cache_clear()
    yield
    reset_blob_store()
    _blob_origin.cache_clear()


@pytest.mark.parametrize(
    ("endpoint", "public", "origin"),
    [
        # MinIO in docker-compose: browsers reach it under another host name.
        ("http://minio:9000", "http://localhost:9000", "http://localhost:9000"),
        ("http://127.0.0.1:9000", None, "http://127.0.0.1:9000"),
        # AWS: a virtual-hosted bucket, read off a presigned URL.
        (None, None, "https://maskloop-blobs.s3.amazonaws.com"),
    ],
)
def test_the_s3_stores_origin_is_allowed_for_images_and_fetches(
    s3_store_settings: None,
    admin_user: User,
    endpoint: str | None,
    public: str | None,
    origin: str,
) -> None:
    with override_settings(**S3_SETTINGS, S3_ENDPOINT_URL=endpoint, S3_PUBLIC_ENDPOINT_URL=public):
        store = S3BlobStore(
            bucket="maskloop-blobs", endpoint_url=endpoint, region="eu-west-1",
            public_endpoint_url=public,
        )  # fmt: skip
        presigned = urlsplit(store.url("images/ab/cd.png") or "")
        if endpoint is None:  # AWS names the region or not, by boto's rules: take its word
            origin = f"{presigned.scheme}://{presigned.netloc}"
            assert re.fullmatch(r"https://maskloop-blobs\.s3[.a-z0-9-]*\.amazonaws\.com", origin)
        assert f"{presigned.scheme}://{presigned.netloc}" == origin
        assert blob_origin() == origin
        response = logged_in(admin_user).get("/")
    found = directives(response[CSP])
    assert found["img-src"] == ["'self'", "data:", "blob:", origin]
    assert found["connect-src"] == ["'self'", origin]
    assert origin not in found["script-src"]


def test_without_s3_credentials_pages_still_answer(
    s3_store_settings: None, admin_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    with override_settings(
        **S3_SETTINGS, S3_ENDPOINT_URL="http://127.0.0.1:9", S3_PUBLIC_ENDPOINT_URL=None
    ):
        response = logged_in(admin_user).get("/")
    assert response.status_code == 200
    assert directives(response[CSP])["img-src"] == ["'self'", "data:", "blob:"]


def test_the_api_docs_page_has_no_inline_script_or_style(admin_user: User) -> None:
    client = logged_in(admin_user)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<style" not in html
    scripts = re.findall(r"<script([^>]*)>", html)
    assert scripts
    assert all("src=" in attributes for attributes in scripts), scripts
    script_url = re.search(r'<script src="([^"]*script[^"]*)"', html)
    assert script_url is not None
    script = client.get(script_url.group(1).replace("&amp;", "&"))
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()
    stylesheet = finders.find("annotation/api-docs.css")
    assert stylesheet
    assert "box-sizing" in Path(str(stylesheet)).read_text()
    assert "annotation/api-docs.css" in html
