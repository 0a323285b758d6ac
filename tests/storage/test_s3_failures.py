"""S3 failure behaviour over real HTTP: endpoint down, flaky and failing servers (FlakyProxy)."""

import io
import os
import time
from collections.abc import Callable

import pytest

from storage.blobs import BlobStoreUnavailable
from storage.blobs.s3 import MIB, S3BlobStore
from tests.conftest import S3_TEST_ENV, free_port
from tests.storage.flaky_proxy import FlakyProxy

PART = 5 * MIB


def _store(endpoint: str, bucket: str, *, max_attempts: int) -> S3BlobStore:
    return S3BlobStore(
        bucket=bucket,
        endpoint_url=endpoint,
        max_attempts=max_attempts,
        multipart_threshold=PART,
        connect_timeout=1,
        read_timeout=5,
    )


def _is_upload_part(method: str, path: str) -> bool:
    return method == "PUT" and "partNumber=" in path


OPERATIONS: dict[str, Callable[[S3BlobStore], object]] = {
    "put_bytes": lambda s: s.put_bytes("k", b"data"),
    "put_file": lambda s: s.put_file("k", io.BytesIO(b"data")),
    "get_bytes": lambda s: s.get_bytes("k"),
    "exists": lambda s: s.exists("k"),
    "size": lambda s: s.size("k"),
    "delete": lambda s: s.delete("k"),
    "list": lambda s: list(s.list()),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_endpoint_down_raises_unavailable_quickly_naming_the_endpoint(
    monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    for name, value in S3_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = _store(endpoint, "down-bucket", max_attempts=2)
    started = time.monotonic()
    with pytest.raises(BlobStoreUnavailable) as info:
        OPERATIONS[operation](store)
    assert time.monotonic() - started < 10
    assert endpoint in str(info.value)
    assert "'down-bucket'" in str(info.value)


@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_transient_503s_are_retried_until_the_request_succeeds(
    s3_endpoint: str, s3_bucket: str, method: str
) -> None:
    direct = _store(s3_endpoint, s3_bucket, max_attempts=1)
    if method == "GET":
        direct.put_bytes("retried", b"payload")
    fails_on = lambda m, _path: m == method  # noqa: E731
    with FlakyProxy(s3_endpoint, failures=2, fails_on=fails_on) as proxy:
        store = _store(proxy.url, s3_bucket, max_attempts=3)
        if method == "PUT":
            store.put_bytes("retried", b"payload")
        assert store.get_bytes("retried") == b"payload"
    assert len(proxy.failed) == 2
    assert direct.get_bytes("retried") == b"payload"


def test_multipart_upload_survives_a_failed_part(s3_endpoint: str, s3_bucket: str) -> None:
    data = os.urandom(2 * PART + 1000)
    with FlakyProxy(s3_endpoint, failures=1, status=500, fails_on=_is_upload_part) as proxy:
        store = _store(proxy.url, s3_bucket, max_attempts=3)
        assert store.put_bytes("parts", data) == len(data)
    assert len(proxy.failed) == 1
    assert _store(s3_endpoint, s3_bucket, max_attempts=1).get_bytes("parts") == data


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_that_keeps_failing_gives_unavailable_and_writes_nothing(
    s3_endpoint: str, s3_bucket: str, status: int
) -> None:
    direct = _store(s3_endpoint, s3_bucket, max_attempts=1)
    with FlakyProxy(s3_endpoint, failures=None, status=status) as proxy:
        store = _store(proxy.url, s3_bucket, max_attempts=2)
        with pytest.raises(BlobStoreUnavailable, match=f"HTTP {status}") as info:
            store.put_bytes("never", b"small object")
        assert proxy.url in str(info.value)
        with pytest.raises(BlobStoreUnavailable):
            store.put_bytes("never-big", os.urandom(PART + 10))
        with pytest.raises(BlobStoreUnavailable):
            store.get_bytes("never")
    assert len(proxy.failed) == 6  # two attempts for each of the three calls
    assert list(direct.list()) == []
    assert direct.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_failing_parts_abort_the_multipart_upload(s3_endpoint: str, s3_bucket: str) -> None:
    direct = _store(s3_endpoint, s3_bucket, max_attempts=1)
    direct.put_bytes("big", b"previous version")
    with FlakyProxy(s3_endpoint, failures=None, fails_on=_is_upload_part) as proxy:
        store = _store(proxy.url, s3_bucket, max_attempts=2)
        with pytest.raises(BlobStoreUnavailable, match="HTTP 503"):
            store.put_bytes("big", os.urandom(3 * PART))
    # The upload was started, its parts failed, and it was aborted rather than left pending.
    assert any("uploads" in path for method, path in proxy.forwarded if method == "POST")
    assert any("uploadId=" in path for method, path in proxy.forwarded if method == "DELETE")
    assert direct.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert direct.get_bytes("big") == b"previous version"
