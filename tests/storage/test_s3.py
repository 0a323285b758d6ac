"""S3-only behaviour: prefixes, settings wiring, bucket handling, presign limits and the
public endpoint of presigned URLs."""

import urllib.request
from urllib.parse import urlsplit

import pytest
from django.test import override_settings

from storage.blobs import BlobError, BlobNotFound, BlobStore, get_blob_store, reset_blob_store
from storage.blobs.s3 import S3BlobStore


def test_keys_live_under_the_store_prefix_and_list_relative_to_it(
    s3_endpoint: str, s3_bucket: str
) -> None:
    store = S3BlobStore(bucket=s3_bucket, prefix="/exports/run-1/", endpoint_url=s3_endpoint)
    store.put_bytes("a.json", b"{}", content_type="application/json")
    head = store.client.head_object(Bucket=s3_bucket, Key="exports/run-1/a.json")
    assert head["ContentType"] == "application/json"
    assert list(store.list()) == ["a.json"]
    assert store.location == f"s3://{s3_bucket}/exports/run-1"


def test_location_without_prefix_names_only_the_bucket(s3_endpoint: str) -> None:
    store = S3BlobStore(bucket="some-bucket", endpoint_url=s3_endpoint)
    assert store.location == "s3://some-bucket"


def test_s3_settings_fixture_switches_the_configured_store_to_s3(
    s3_settings: BlobStore, s3_bucket: str
) -> None:
    assert get_blob_store() is s3_settings
    assert isinstance(s3_settings, S3BlobStore)
    s3_settings.put_bytes("images/x", b"1")
    assert s3_settings.client.get_object(Bucket=s3_bucket, Key="images/x")["Body"].read() == b"1"


def test_missing_bucket_is_a_clear_error_not_a_missing_key(s3_endpoint: str) -> None:
    store = S3BlobStore(bucket="no-such-bucket-here", endpoint_url=s3_endpoint, max_attempts=1)
    with pytest.raises(BlobError, match=r"'no-such-bucket-here' at http.* does not exist") as info:
        store.put_bytes("k", b"x")
    assert not isinstance(info.value, BlobNotFound)
    with pytest.raises(BlobError, match="does not exist"):
        store.get_bytes("k")


def test_ensure_bucket_creates_a_missing_bucket_once(s3_endpoint: str) -> None:
    store = S3BlobStore(bucket="created-by-ensure", endpoint_url=s3_endpoint, create_bucket=True)
    store.ensure_bucket()  # second call: already there, no error
    store.put_bytes("k", b"v")
    assert store.get_bytes("k") == b"v"


@pytest.mark.parametrize("bucket", ["", "Upper", "a", "under_score", "-dash"])
def test_invalid_bucket_names_are_rejected(bucket: str) -> None:
    with pytest.raises(ValueError, match="bucket name"):
        S3BlobStore(bucket=bucket, endpoint_url="http://127.0.0.1:1")


@pytest.mark.parametrize("expires", [0, 8 * 24 * 3600])
def test_presign_lifetime_outside_sigv4_limits_is_rejected(
    s3_endpoint: str, s3_bucket: str, expires: int
) -> None:
    store = S3BlobStore(bucket=s3_bucket, endpoint_url=s3_endpoint)
    with pytest.raises(ValueError, match="lifetime"):
        store.url("k", expires=expires)


def test_presigned_url_uses_the_store_default_lifetime(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3BlobStore(bucket=s3_bucket, endpoint_url=s3_endpoint, presign_seconds=120)
    url = store.url("k")
    assert url is not None
    assert "X-Amz-Expires=120" in url
    assert url.startswith(f"{s3_endpoint}/{s3_bucket}/k?")  # path-style for custom endpoints


def test_missing_credentials_give_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, s3_bucket: str, s3_endpoint: str, tmp_path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = S3BlobStore(bucket=s3_bucket, endpoint_url=s3_endpoint)
    with pytest.raises(BlobError, match="AWS_ACCESS_KEY_ID"):
        store.put_bytes("k", b"x")


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: bytes = response.read()
        return data


def test_presigned_url_names_the_public_endpoint_and_downloads_through_it(
    s3_endpoint: str, s3_bucket: str
) -> None:
    # The same server under another host name, as a browser reaches MinIO on localhost:9000
    # while the containers use minio:9000.
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    store = S3BlobStore(bucket=s3_bucket, endpoint_url=s3_endpoint, public_endpoint_url=public)
    store.put_bytes("exports/1/a.json", b'{"a": 1}')
    url = store.url("exports/1/a.json", filename="a.json")
    assert url is not None
    parts = urlsplit(url)
    assert parts.netloc == urlsplit(public).netloc
    assert parts.path == f"/{s3_bucket}/exports/1/a.json"
    assert _download(url) == b'{"a": 1}'


def test_presigned_url_still_downloads_when_the_public_endpoint_is_the_real_one(
    s3_endpoint: str, s3_bucket: str
) -> None:
    store = S3BlobStore(
        bucket=s3_bucket, endpoint_url=s3_endpoint, public_endpoint_url=f"{s3_endpoint}/"
    )
    store.put_bytes("k", b"payload")
    url = store.url("k")
    assert url is not None
    assert url.startswith(f"{s3_endpoint}/{s3_bucket}/k?")
    assert _download(url) == b"payload"


def test_configured_store_signs_urls_for_s3_public_endpoint_url(
    s3_endpoint: str, s3_bucket: str, s3_settings: BlobStore
) -> None:
    with override_settings(S3_PUBLIC_ENDPOINT_URL="http://localhost:9000"):
        reset_blob_store()
        url = get_blob_store().url("images/x")
    reset_blob_store()
    assert url is not None
    assert url.startswith(f"http://localhost:9000/{s3_bucket}/images/x?")


def test_a_public_endpoint_that_is_not_an_http_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="public S3 endpoint"):
        S3BlobStore(bucket="some-bucket", public_endpoint_url="localhost:9000")
