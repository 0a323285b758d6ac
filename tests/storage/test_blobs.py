"""One behaviour suite for every blob store backend: local disk and S3 over real HTTP (moto)."""

import hashlib
import io
import os
import urllib.request
from pathlib import Path

import pytest

from storage.blobs import BlobNotFound, BlobStore, InvalidBlobKey, LocalBlobStore
from storage.blobs.s3 import MIB, S3BlobStore

PART = 5 * MIB  # the smallest multipart threshold S3 allows, to keep test objects small


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "store")
    return S3BlobStore(
        bucket=request.getfixturevalue("s3_bucket"),
        prefix="data",
        endpoint_url=request.getfixturevalue("s3_endpoint"),
        max_attempts=2,
        multipart_threshold=PART,
    )


@pytest.fixture(scope="module")
def big_payload() -> bytes:
    return os.urandom(2 * PART + 123_457)  # three parts, the last one short


class FailingReader(io.RawIOBase):
    """Hands out ``good`` bytes, then fails as a vanished disk or dropped upload would."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            raise OSError("source vanished mid-stream")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_put_bytes_then_get_bytes_returns_the_same_bytes(store: BlobStore) -> None:
    written = store.put_bytes("images/abc", b"\x00hello\xff")
    assert written == 7
    assert store.get_bytes("images/abc") == b"\x00hello\xff"


def test_put_file_reads_from_the_current_position_and_counts_bytes(store: BlobStore) -> None:
    source = io.BytesIO(b"HEADERpayload")
    source.seek(6)
    assert store.put_file("a/b", source) == 7
    assert store.get_bytes("a/b") == b"payload"


def test_put_overwrites_an_existing_key(store: BlobStore) -> None:
    store.put_bytes("k", b"old content")
    store.put_bytes("k", b"new")
    assert store.get_bytes("k") == b"new"
    assert store.size("k") == 3


def test_open_streams_a_large_object_in_bounded_reads(store: BlobStore, big_payload) -> None:
    store.put_bytes("big/object", big_payload)
    digest = hashlib.sha256()
    reads = 0
    with store.open("big/object") as fh:
        while chunk := fh.read(MIB):
            assert len(chunk) <= MIB
            digest.update(chunk)
            reads += 1
    assert digest.hexdigest() == hashlib.sha256(big_payload).hexdigest()
    assert reads == len(big_payload) // MIB + 1


def test_put_file_above_the_threshold_writes_an_intact_object(
    store: BlobStore, big_payload: bytes, tmp_path: Path
) -> None:
    source = tmp_path / "upload.bin"
    source.write_bytes(big_payload)
    with source.open("rb") as fh:
        assert store.put_file("big/multipart", fh) == len(big_payload)
    assert store.get_bytes("big/multipart") == big_payload
    if isinstance(store, S3BlobStore):
        head = store.client.head_object(Bucket=store.bucket, Key="data/big/multipart")
        assert head["ETag"].endswith('-3"'), "expected a three-part multipart upload"


def test_list_yields_keys_under_a_prefix_in_order(store: BlobStore) -> None:
    for key in ["images/b", "images/a", "imagesX", "embeddings/a", "images/sub/c"]:
        store.put_bytes(key, b"1")
    assert list(store.list("images/")) == ["images/a", "images/b", "images/sub/c"]
    assert list(store.list()) == ["embeddings/a", "images/a", "images/b", "images/sub/c", "imagesX"]
    assert list(store.list("nothing/")) == []


def test_delete_removes_the_key_and_is_idempotent(store: BlobStore) -> None:
    store.put_bytes("gone", b"x")
    store.delete("gone")
    store.delete("gone")
    store.delete("never-existed")
    assert not store.exists("gone")
    assert list(store.list()) == []


def test_exists_and_size_describe_a_stored_key(store: BlobStore) -> None:
    assert not store.exists("sized")
    store.put_bytes("sized", b"12345")
    assert store.exists("sized")
    assert store.size("sized") == 5


def test_missing_key_raises_blob_not_found_from_every_read(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        store.open("missing/key")
    with pytest.raises(BlobNotFound):
        store.get_bytes("missing/key")
    with pytest.raises(BlobNotFound):
        store.size("missing/key")


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a\\b", "a/../b", "", "a/./b"])
def test_traversal_and_malformed_keys_are_rejected_by_every_operation(
    store: BlobStore, key: str
) -> None:
    operations = [
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put_file(key, io.BytesIO(b"x")),
        lambda: store.open(key),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.delete(key),
    ]
    for operation in operations:
        with pytest.raises(InvalidBlobKey):
            operation()
    assert list(store.list()) == []


def test_failed_write_keeps_the_old_content_and_leaves_no_partial_data(
    store: BlobStore, tmp_path: Path
) -> None:
    store.put_bytes("victim", b"original")
    with pytest.raises(OSError, match="vanished"):
        # Fails after more than one part, so S3 has a multipart upload in flight.
        store.put_file("victim", io.BufferedReader(FailingReader(PART + MIB)))
    assert store.get_bytes("victim") == b"original"
    assert list(store.list()) == ["victim"]
    if isinstance(store, LocalBlobStore):
        assert [p.name for p in (tmp_path / "store").iterdir()] == ["victim"]
    else:
        assert isinstance(store, S3BlobStore)
        uploads = store.client.list_multipart_uploads(Bucket=store.bucket)
        assert uploads.get("Uploads", []) == []


def test_presigned_url_downloads_the_object_with_plain_http(store: BlobStore) -> None:
    store.put_bytes("exports/coco.json", b'{"images": []}')
    url = store.url("exports/coco.json", expires=60, filename="my export.json")
    if isinstance(store, LocalBlobStore):
        assert url is None  # the app serves local blobs itself
        return
    assert url is not None
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b'{"images": []}'
        disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="my export.json"')


def test_local_blobs_get_the_mode_open_would_give_them(tmp_path: Path) -> None:
    """Not mkstemp's 0600: an export copied out of the store must be readable as the user's
    other files are (0666 less the process's umask: 0644 under the usual 022)."""
    from storage.blobs import local

    store = LocalBlobStore(tmp_path / "store")
    store.put_bytes("exports/1/coco.json", b"{}")
    mode = (tmp_path / "store" / "exports" / "1" / "coco.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~local._UMASK
    assert local._UMASK == 0o077 or mode != 0o600
