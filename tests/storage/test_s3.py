"""S3-only behaviour: prefixes, settings wiring, bucket handling and presign limits."""

import pytest

from storage.blobs import BlobError, BlobNotFound, BlobStore, get_blob_store
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
