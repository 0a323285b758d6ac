"""Shared fixtures: users, projects, memberships and an API client."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient


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
