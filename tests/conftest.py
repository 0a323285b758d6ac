"""Shared fixtures: users, projects, memberships, an API client and a real S3 endpoint."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient

from storage.blobs import BlobStore


@pytest.fixture(autouse=True)
def _blob_root(tmp_path: Path) -> Iterator[Path]:
    """Each test gets its own local blob directory; the cached store is rebuilt for it."""
    root = tmp_path / "blobs"
    with override_settings(BLOB_ROOT=root, STORAGE_BACKEND="local"):
        from storage.blobs import reset_blob_store

        reset_blob_store()
        yield root
        reset_blob_store()


@pytest.fixture
def admin_user(db: None) -> User:
    return User.objects.create_user("alice", password="alice-pass-123")


@pytest.fixture
def annotator_user(db: None) -> User:
    return User.objects.create_user("bob", password="bob-pass-123")


@pytest.fixture
def outsider_user(db: None) -> User:
    return User.objects.create_user("eve", password="eve-pass-123")


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


# --- S3: a real HTTP endpoint (moto's standalone server) -----------------------------------

S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "maskloop-test",
    "AWS_SECRET_ACCESS_KEY": "maskloop-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _moto_server_command() -> str:
    found = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    found = found or shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found: install moto[server] into the venv")
    return found


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is up
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {url} within {timeout} s")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start moto's S3 server once per session; yields its URL (http://127.0.0.1:PORT)."""
    saved = {name: os.environ.get(name) for name in (*S3_TEST_ENV, "NO_PROXY", "no_proxy")}
    os.environ.update(S3_TEST_ENV)
    # A proxy configured on the machine must not intercept requests to the local server.
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [saved[name], "127.0.0.1", "localhost"]))
    port = free_port()
    process = subprocess.Popen(
        [_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answering(url, process, timeout=30)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def s3_test_client(endpoint: str) -> Any:
    """A plain boto3 client on the test endpoint, for checks behind the blob store's back."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, uniquely named, empty bucket on the test endpoint."""
    name = f"maskloop-test-{uuid.uuid4().hex[:16]}"
    s3_test_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_settings(s3_endpoint: str, s3_bucket: str, _blob_root: Path) -> Iterator[BlobStore]:
    """Settings switched to the S3 backend on the test bucket; yields ``get_blob_store()``."""
    from storage.blobs import get_blob_store, reset_blob_store

    with override_settings(
        STORAGE_BACKEND="s3",
        S3_BUCKET=s3_bucket,
        S3_PREFIX="",
        S3_ENDPOINT_URL=s3_endpoint,
        S3_REGION="us-east-1",
        S3_MAX_ATTEMPTS=2,
    ):
        reset_blob_store()
        yield get_blob_store()
        reset_blob_store()
