"""open_location(): user-given export/import locations become blob stores."""

from pathlib import Path

import pytest
from django.test import override_settings

from storage.blobs import LocalBlobStore, open_location
from storage.blobs.s3 import S3BlobStore


def test_s3_url_opens_the_bucket_and_prefix_on_the_configured_endpoint(
    s3_endpoint: str, s3_bucket: str
) -> None:
    with override_settings(S3_ENDPOINT_URL=s3_endpoint, S3_REGION="us-east-1", S3_MAX_ATTEMPTS=2):
        store = open_location(f"s3://{s3_bucket}/exports/2024/")
    assert isinstance(store, S3BlobStore)
    assert store.location == f"s3://{s3_bucket}/exports/2024"
    store.put_bytes("coco.json", b"{}")
    raw = store.client.get_object(Bucket=s3_bucket, Key="exports/2024/coco.json")
    assert raw["Body"].read() == b"{}"


def test_s3_url_without_a_prefix_uses_the_bucket_root(s3_endpoint: str, s3_bucket: str) -> None:
    with override_settings(S3_ENDPOINT_URL=s3_endpoint):
        store = open_location(f"s3://{s3_bucket}")
    store.put_bytes("top", b"1")
    assert store.location == f"s3://{s3_bucket}"
    assert store.get_bytes("top") == b"1"


def test_absolute_path_opens_a_local_store_there(tmp_path: Path) -> None:
    store = open_location(str(tmp_path / "out"))
    store.put_bytes("a/b.json", b"x")
    assert isinstance(store, LocalBlobStore)
    assert (tmp_path / "out" / "a" / "b.json").read_bytes() == b"x"


def test_relative_path_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_location("exports/run1")
    assert store.location == str(tmp_path / "exports" / "run1")


def test_file_url_opens_a_local_store(tmp_path: Path) -> None:
    store = open_location(f"file://{tmp_path}/with%20space")
    assert isinstance(store, LocalBlobStore)
    assert store.location == str(tmp_path / "with space")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty storage location"),
        ("   ", "empty storage location"),
        ("http://example.com/data", "unsupported storage location scheme 'http'"),
        ("gs://bucket/prefix", "unsupported storage location scheme 'gs'"),
        ("s3:///only/a/prefix", "without a bucket"),
        ("s3://Not_A_Bucket/x", "invalid S3 bucket name"),
        ("s3://bucket/a/../b", "invalid blob key"),
        ("file://otherhost/x", "must name a local path"),
    ],
)
def test_bad_locations_raise_value_error_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_location(url)
