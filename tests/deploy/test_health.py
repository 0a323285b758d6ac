"""/healthz and /readyz (config/health.py): answered for any Host and without signing in,
every dependency checked for real (PostgreSQL, the blob folder or a real S3 endpoint, Redis as
cache and broker), a failing required one answering 503 and an optional one "degraded", within
the probe timeout, and no host, path or exception text in the answers."""

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from config import health
from storage.blobs import reset_blob_store

pytestmark = pytest.mark.django_db

OTHER_HOST = "10.20.30.40"  # how an orchestrator addresses a pod: not in ALLOWED_HOSTS
REDIS_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/15",
    }
}


def closed_port() -> int:
    """A local TCP port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ready(client: Client) -> tuple[int, dict[str, Any], str]:
    answer = client.get("/readyz", HTTP_HOST=OTHER_HOST)
    return answer.status_code, json.loads(answer.content), answer.content.decode()


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture(autouse=True)
def _migrations_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "_migrated", False)


def test_liveness_answers_any_host_without_signing_in(client: Client) -> None:
    answer = client.get("/healthz", HTTP_HOST=OTHER_HOST)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}
    assert answer["Cache-Control"] == "no-store"
    # Only the probes skip the Host check: a page for that host is still refused.
    assert client.get("/login/", HTTP_HOST=OTHER_HOST).status_code == 400


def test_probes_take_get_and_head_only(client: Client) -> None:
    head = client.head("/readyz", HTTP_HOST=OTHER_HOST)
    assert head.status_code == 200
    assert head.content == b""
    refused = client.post("/healthz", HTTP_HOST=OTHER_HOST)
    assert refused.status_code == 405
    assert refused["Allow"] == "GET, HEAD"


@override_settings(CACHES=REDIS_CACHE)
def test_everything_up_is_ready(client: Client) -> None:
    code, body, _ = ready(client)
    assert code == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "migrations", "blob_store", "cache", "broker"}
    for check in body["checks"].values():
        assert check["ok"] is True
        assert check["ms"] >= 0


def test_migrations_left_to_apply_make_it_unavailable(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Pending:
        def __init__(self, connection: Any) -> None:
            self.loader = type("Loader", (), {"graph": type("Graph", (), {"leaf_nodes": list})})

        def migration_plan(self, targets: Any) -> list[tuple[str, bool]]:
            return [("annotation.0099_new", False), ("engine.0099_new", False)]

    monkeypatch.setattr(health, "MigrationExecutor", Pending)
    code, body, _ = ready(client)
    assert code == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["migrations"] == {
        "ok": False,
        "ms": body["checks"]["migrations"]["ms"],
        "error": "2 migration(s) not applied: run manage.py migrate",
    }
    assert body["checks"]["database"]["ok"] is True


def test_a_missing_blob_folder_makes_it_unavailable_without_naming_it(
    client: Client, tmp_path: Path
) -> None:
    gone = tmp_path / "no" / "such" / "blobs"
    with override_settings(STORAGE_BACKEND="local", BLOB_ROOT=gone):
        reset_blob_store()
        try:
            code, body, text = ready(client)
        finally:
            reset_blob_store()
    assert code == 503
    assert body["checks"]["blob_store"]["ok"] is False
    assert str(tmp_path) not in text


def test_a_blob_folder_not_created_yet_is_ready(client: Client, tmp_path: Path) -> None:
    """A fresh install: the folder is made by the first write, its parent takes it."""
    with override_settings(STORAGE_BACKEND="local", BLOB_ROOT=tmp_path / "blobs"):
        reset_blob_store()
        try:
            code, body, _ = ready(client)
        finally:
            reset_blob_store()
    assert body["checks"]["blob_store"]["ok"] is True, body
    assert code == 200


def test_s3_up_is_ready(client: Client, s3_settings: Any) -> None:
    code, body, _ = ready(client)
    assert body["checks"]["blob_store"]["ok"] is True, body
    assert code == 200


def test_s3_down_or_its_bucket_gone_is_unavailable_within_the_timeout(
    client: Client, s3_endpoint: str
) -> None:
    unreachable = f"http://127.0.0.1:{closed_port()}"
    for endpoint, bucket in ((unreachable, "maskloop-probe"), (s3_endpoint, "no-such-bucket-x1")):
        with override_settings(
            STORAGE_BACKEND="s3",
            S3_BUCKET=bucket,
            S3_PREFIX="",
            S3_ENDPOINT_URL=endpoint,
            S3_REGION="us-east-1",
            S3_MAX_ATTEMPTS=5,  # the store's own retries: the probe does not wait for them
            MASKLOOP_PROBE_TIMEOUT_S=2.0,
        ):
            reset_blob_store()
            started = time.monotonic()
            try:
                code, body, text = ready(client)
            finally:
                reset_blob_store()
        assert time.monotonic() - started < 2.5
        assert code == 503, body
        assert body["checks"]["blob_store"]["ok"] is False
        assert "127.0.0.1" not in text
        assert bucket not in text


def test_a_hung_dependency_answers_within_the_timeout(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    monkeypatch.setitem(health.CHECKS, "blob_store", lambda: release.wait(10))
    try:
        with override_settings(MASKLOOP_PROBE_TIMEOUT_S=0.5):
            started = time.monotonic()
            code, body, _ = ready(client)
            assert time.monotonic() - started < 1.5
            assert code == 503
            assert body["checks"]["blob_store"]["error"] == "no answer within 0.5 s"
            # The next probe does not start a second copy of the hung check.
            code, body, _ = ready(client)
            assert code == 503
            assert body["checks"]["blob_store"]["error"] == "no answer within 0.5 s"
            assert body["checks"]["database"]["ok"] is True
            assert health._pool._work_queue.qsize() == 0
    finally:
        release.set()
        health._inflight["blob_store"].result(timeout=10)


def test_cache_or_broker_down_is_degraded_but_still_serving(client: Client) -> None:
    down = f"redis://127.0.0.1:{closed_port()}/0"
    cache = {"default": {**REDIS_CACHE["default"], "LOCATION": down}}
    with override_settings(CACHES=cache, CELERY_BROKER_URL=down):
        code, body, text = ready(client)
    assert code == 200
    assert body["status"] == "degraded"
    assert body["checks"]["cache"]["ok"] is False
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert str(down) not in text
    assert "Connection" not in text


def test_the_folder_broker_is_checked_on_disk(client: Client, tmp_path: Path) -> None:
    folder = tmp_path / "broker"
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    with override_settings(
        CELERY_BROKER_URL="filesystem://localhost//", CELERY_BROKER_TRANSPORT_OPTIONS=options
    ):
        assert ready(client)[1]["checks"]["broker"]["ok"] is False
        folder.mkdir()
        assert ready(client)[1]["checks"]["broker"]["ok"] is True
