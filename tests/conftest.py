"""Shared fixtures: users, a project with members, API clients and a real S3 endpoint."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient

from annotation.models import Project
from annotation.services.projects import membership_set, project_create
from storage.blobs import BlobStore
from tests.factories import client_for

# Older test modules import these from here; their home is tests/s3server.py.
from tests.s3server import S3_TEST_ENV as S3_TEST_ENV
from tests.s3server import free_port as free_port
from tests.s3server import moto_server, s3_test_client


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


@pytest.fixture
def project(admin_user: User, annotator_user: User) -> Project:
    """Project "cats" ("cat photos"): alice is its admin, bob an annotator, eve no member."""
    project = project_create(name="cats", description="cat photos", creator=admin_user)
    membership_set(project=project, user=annotator_user, role="annotator")
    return project


@pytest.fixture
def admin_client(admin_user: User) -> APIClient:
    """An API client authenticated as alice."""
    return client_for(admin_user)


@pytest.fixture
def annotator_client(annotator_user: User) -> APIClient:
    """An API client authenticated as bob."""
    return client_for(annotator_user)


@pytest.fixture
def redis_broker() -> Iterator[redis.Redis]:
    """A client of the Redis database that Celery sends tasks to, emptied before and after the
    test; skips the test when the broker is not Redis."""
    from config.celery import app as celery_app

    url = str(celery_app.conf.broker_url)
    if not url.startswith("redis://"):
        pytest.skip(f"this test needs a Redis broker, not {url}")
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


# --- S3: a real HTTP endpoint (moto's standalone server) -----------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start moto's S3 server once per session; yields its URL (http://127.0.0.1:PORT)."""
    with moto_server() as url:
        yield url


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
