"""Ingestion services: uploads, batches, folder and S3 imports; bad input changes nothing."""

import hashlib
from pathlib import Path

import pytest
from django.test import override_settings

from annotation.errors import DomainError, ImageRejected
from annotation.models import Image, Project
from annotation.services import ingest
from annotation.services.ingest import image_ingest, images_import, images_ingest_batch
from engine.models import Job
from engine.services.jobs import JobCancelled, job_cancel
from storage.blobs import BlobStoreUnavailable
from tests.annotation.test_imaging import jpeg_bytes, png_bomb
from tests.s3server import s3_test_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def project() -> Project:
    return Project.objects.create(name="ingest")


@pytest.fixture
def blob_root(_blob_root: Path) -> Path:
    """The per-test local blob directory (from tests/conftest.py)."""
    return _blob_root


def blob_files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def assert_nothing_stored(blob_root: Path) -> None:
    assert Image.objects.count() == 0
    assert blob_files(blob_root) == []


# --- image_ingest ------------------------------------------------------------------------


def test_image_ingest_stores_bytes_under_their_sha_and_creates_the_row(project, blob_root):
    data = jpeg_bytes(64, 48, orientation=6)
    outcome = image_ingest(project=project, data=data, file_name="holiday/beach.jpg")
    sha = hashlib.sha256(data).hexdigest()
    assert outcome.status == "imported"
    image = Image.objects.get()
    assert outcome.image == image
    assert (image.sha256, image.blob_key, image.file_name) == (sha, f"images/{sha}", "beach.jpg")
    assert (image.width, image.height, image.format, image.byte_size) == (48, 64, "JPEG", len(data))
    assert (blob_root / "images" / sha).read_bytes() == data


def test_same_bytes_again_is_a_duplicate_and_creates_nothing(project, blob_root):
    data = jpeg_bytes()
    first = image_ingest(project=project, data=data, file_name="a.jpg")
    again = image_ingest(project=project, data=data, file_name="renamed.jpg")
    assert again.status == "duplicate"
    assert again.image == first.image
    assert Image.objects.count() == 1
    assert Image.objects.get().file_name == "a.jpg"
    assert len(blob_files(blob_root)) == 1


def test_same_bytes_in_another_project_share_one_blob(project, blob_root):
    data = jpeg_bytes()
    other = Project.objects.create(name="other")
    image_ingest(project=project, data=data, file_name="a.jpg")
    outcome = image_ingest(project=other, data=data, file_name="a.jpg")
    assert outcome.status == "imported"
    assert Image.objects.filter(sha256=hashlib.sha256(data).hexdigest()).count() == 2
    assert len(blob_files(blob_root)) == 1


def test_zero_byte_upload_is_rejected_and_stores_nothing(project, blob_root):
    with pytest.raises(ImageRejected, match=r"empty\.jpg: empty file \(0 bytes\)"):
        image_ingest(project=project, data=b"", file_name="empty.jpg")
    assert_nothing_stored(blob_root)


def test_truncated_jpeg_upload_is_rejected_and_stores_nothing(project, blob_root):
    data = jpeg_bytes(200, 200)
    with pytest.raises(ImageRejected, match="truncated or corrupt JPEG"):
        image_ingest(project=project, data=data[: len(data) // 2], file_name="cut.jpg")
    assert_nothing_stored(blob_root)


def test_text_file_named_png_is_rejected_and_stores_nothing(project, blob_root):
    with pytest.raises(ImageRejected, match=r"notes\.png: not an image"):
        image_ingest(project=project, data=b"just some text\n", file_name="notes.png")
    assert_nothing_stored(blob_root)


@override_settings(MASKLOOP_MAX_IMAGE_PIXELS=20_000_000)
def test_decompression_bomb_is_rejected_by_the_configured_pixel_limit(project, blob_root):
    with pytest.raises(ImageRejected, match="over the limit of 20000000 pixels") as caught:
        image_ingest(project=project, data=png_bomb(5_000, 5_000), file_name="bomb.png")
    assert "not decoded" in caught.value.message
    assert_nothing_stored(blob_root)


def test_30000_square_png_bomb_is_rejected_and_stores_nothing(project, blob_root):
    with pytest.raises(ImageRejected, match="decompression bomb"):
        image_ingest(project=project, data=png_bomb(30_000, 30_000), file_name="bomb.png")
    assert_nothing_stored(blob_root)


def test_image_over_the_byte_limit_is_rejected_and_stores_nothing(project, blob_root):
    data = jpeg_bytes(300, 300)
    with (
        override_settings(MASKLOOP_MAX_IMAGE_BYTES=len(data) - 1),
        pytest.raises(ImageRejected, match=f"over the limit of {len(data) - 1} bytes"),
    ):
        image_ingest(project=project, data=data, file_name="big.jpg")
    assert_nothing_stored(blob_root)


@pytest.mark.parametrize("name", ["../../etc/cron.d/x.jpg", "/abs/x.jpg", "..\\x.jpg", "a\x00.jpg"])
def test_unsafe_upload_name_is_rejected_and_stores_nothing(project, blob_root, name):
    with pytest.raises(ImageRejected, match="unsafe file name"):
        image_ingest(project=project, data=jpeg_bytes(), file_name=name)
    assert_nothing_stored(blob_root)


# --- images_ingest_batch -----------------------------------------------------------------


def test_batch_of_good_files_imports_each_in_order(project, blob_root):
    files = [(f"{i}.jpg", jpeg_bytes(seed=i)) for i in range(4)]
    outcomes = images_ingest_batch(project=project, files=files)
    assert [o.status for o in outcomes] == ["imported"] * 4
    assert list(Image.objects.values_list("file_name", flat=True)) == [n for n, _ in files]
    assert len(blob_files(blob_root)) == 4


def test_same_bytes_twice_in_one_batch_import_once(project):
    data = jpeg_bytes()
    outcomes = images_ingest_batch(project=project, files=[("a.jpg", data), ("b.jpg", data)])
    assert [o.status for o in outcomes] == ["imported", "duplicate"]
    assert Image.objects.count() == 1


def test_batch_with_one_bad_file_stores_nothing_and_names_each_bad_file(project, blob_root):
    files = [
        ("good.jpg", jpeg_bytes(seed=1)),
        ("empty.jpg", b""),
        ("also-good.jpg", jpeg_bytes(seed=2)),
        ("../escape.jpg", jpeg_bytes(seed=3)),
    ]
    with pytest.raises(ImageRejected) as caught:
        images_ingest_batch(project=project, files=files)
    assert caught.value.message.startswith("2 of 4 files rejected, nothing was imported")
    details = caught.value.details
    assert isinstance(details, dict)
    rejected = details["rejected"]
    assert [r["file_name"] for r in rejected] == ["empty.jpg", "../escape.jpg"]
    assert rejected[0]["reason"] == "empty file (0 bytes)"
    assert "path traversal" in rejected[1]["reason"]
    assert_nothing_stored(blob_root)


def test_empty_batch_is_refused(project):
    with pytest.raises(DomainError, match="no files were uploaded"):
        images_ingest_batch(project=project, files=[])


# --- images_import from a folder ---------------------------------------------------------


def make_folder(root: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = root / f"batch{i % 3}" / f"img{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(48, 32, seed=i))
        paths.append(path)
    return paths


def test_folder_import_imports_every_image_recursively_as_an_ingest_job(
    project, tmp_path, admin_user
):
    make_folder(tmp_path / "src", 36)
    seen: list[tuple[int, int, str]] = []
    summary = images_import(
        project=project,
        source=str(tmp_path / "src"),
        user=admin_user,
        progress=lambda done, total, outcome: seen.append((done, total, outcome.status)),
    )
    assert (summary.imported, summary.duplicate, summary.rejected) == (36, 0, [])
    assert Image.objects.filter(project=project).count() == 36
    assert seen[-1] == (36, 36, "imported")
    assert len(seen) == 36
    job = Job.objects.get(pk=summary.job_id)
    assert (job.kind, job.status, job.project, job.created_by) == (
        "ingest",
        "succeeded",
        project,
        admin_user,
    )
    assert (job.progress_done, job.progress_total) == (36, 36)
    assert job.result["imported"] == 36
    assert job.result["rejected_count"] == 0


def test_folder_import_goes_in_path_order_and_skips_hidden_entries(project, tmp_path):
    src = tmp_path / "src"
    make_folder(src, 6)
    (src / ".DS_Store").write_bytes(b"finder junk")
    (src / ".cache").mkdir()
    (src / ".cache" / "thumb.jpg").write_bytes(jpeg_bytes(seed=99))
    summary = images_import(project=project, source=str(src))
    assert summary.line == "imported 6, duplicate 0, rejected 0"
    assert summary.skipped == 2
    names = list(Image.objects.order_by("id").values_list("file_name", flat=True))
    assert names == [
        "img000.jpg",
        "img003.jpg",
        "img001.jpg",
        "img004.jpg",
        "img002.jpg",
        "img005.jpg",
    ]


def test_folder_import_continues_past_rejections_and_records_each_reason(project, tmp_path):
    src = tmp_path / "src"
    make_folder(src, 5)
    (src / "empty.jpg").write_bytes(b"")
    (src / "readme.png").write_text("not a picture")
    good = jpeg_bytes(200, 200, seed=50)
    (src / "z_cut.jpg").write_bytes(good[: len(good) // 2])
    summary = images_import(project=project, source=str(src))
    assert summary.line == "imported 5, duplicate 0, rejected 3"
    assert dict(summary.rejected) == {
        "empty.jpg": "empty file (0 bytes)",
        "readme.png": "not an image (no JPEG, PNG, WebP or TIFF header could be read)",
        "z_cut.jpg": summary.rejected[2][1],
    }
    assert summary.rejected[2][1].startswith("truncated or corrupt JPEG")
    job = Job.objects.get(pk=summary.job_id)
    assert job.status == "succeeded"
    assert {r["file_name"] for r in job.result["rejected"]} == {
        "empty.jpg",
        "readme.png",
        "z_cut.jpg",
    }


def test_folder_import_refuses_oversized_files_without_reading_them(project, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = jpeg_bytes(300, 300)
    (src / "big.jpg").write_bytes(data)
    with override_settings(MASKLOOP_MAX_IMAGE_BYTES=1000):
        summary = images_import(project=project, source=str(src))
    assert summary.rejected == [
        ("big.jpg", f"file is {len(data)} bytes, over the limit of 1000 bytes")
    ]
    assert Image.objects.count() == 0


def test_reimporting_a_folder_creates_nothing_new(project, tmp_path, blob_root):
    make_folder(tmp_path / "src", 10)
    images_import(project=project, source=str(tmp_path / "src"))
    before = (list(Image.objects.values_list("id", flat=True)), blob_files(blob_root))
    summary = images_import(project=project, source=str(tmp_path / "src"))
    assert summary.line == "imported 0, duplicate 10, rejected 0"
    assert (list(Image.objects.values_list("id", flat=True)), blob_files(blob_root)) == before


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/no/such/folder", "does not exist"),
        ("ftp://host/images", "unsupported source"),
        ("", "no source given"),
    ],
)
def test_unusable_source_is_refused_before_any_job_exists(project, source, message):
    with pytest.raises(DomainError, match=message):
        images_import(project=project, source=source)
    assert Job.objects.count() == 0


def test_a_file_as_source_is_refused(project, tmp_path):
    path = tmp_path / "one.jpg"
    path.write_bytes(jpeg_bytes())
    with pytest.raises(DomainError, match="is not a folder"):
        images_import(project=project, source=str(path))
    assert Image.objects.count() == 0


# --- images_import from S3 ---------------------------------------------------------------


@pytest.fixture
def s3_source(s3_endpoint, s3_bucket):
    """Endpoint settings for ``s3://`` sources; the blob store stays local."""
    with override_settings(S3_ENDPOINT_URL=s3_endpoint, S3_REGION="us-east-1", S3_MAX_ATTEMPTS=2):
        yield s3_test_client(s3_endpoint)


def test_s3_prefix_import_imports_every_object_under_the_prefix(project, s3_source, s3_bucket):
    for i in range(12):
        s3_source.put_object(
            Bucket=s3_bucket, Key=f"incoming/part{i % 2}/{i:02d}.jpg", Body=jpeg_bytes(seed=i)
        )
    s3_source.put_object(Bucket=s3_bucket, Key="elsewhere/x.jpg", Body=jpeg_bytes(seed=100))
    s3_source.put_object(Bucket=s3_bucket, Key="incoming/folder-marker/", Body=b"")
    summary = images_import(project=project, source=f"s3://{s3_bucket}/incoming")
    assert summary.line == "imported 12, duplicate 0, rejected 0"
    assert summary.source == f"s3://{s3_bucket}/incoming"
    assert Image.objects.count() == 12
    assert Image.objects.order_by("id").values_list("file_name", flat=True)[0] == "00.jpg"
    assert Job.objects.get(pk=summary.job_id).result["imported"] == 12


def test_s3_key_with_dot_dot_is_rejected_and_never_read(project, s3_source, s3_bucket, blob_root):
    # Valid image bytes: had the key been read, they would have been imported.
    s3_source.put_object(Bucket=s3_bucket, Key="prefix/../evil.png", Body=jpeg_bytes(seed=7))
    s3_source.put_object(Bucket=s3_bucket, Key="prefix/ok.jpg", Body=jpeg_bytes(seed=8))
    summary = images_import(project=project, source=f"s3://{s3_bucket}/prefix")
    assert summary.line == "imported 1, duplicate 0, rejected 1"
    name, reason = summary.rejected[0]
    assert name == "../evil.png"
    assert "path traversal" in reason
    assert list(Image.objects.values_list("file_name", flat=True)) == ["ok.jpg"]
    assert len(blob_files(blob_root)) == 1


def test_s3_import_stores_blobs_in_the_s3_backend(project, s3_settings, s3_endpoint, s3_bucket):
    client = s3_test_client(s3_endpoint)
    data = jpeg_bytes(seed=5)
    client.put_object(Bucket=s3_bucket, Key="in/a.jpg", Body=data)
    summary = images_import(project=project, source=f"s3://{s3_bucket}/in")
    assert summary.imported == 1
    sha = hashlib.sha256(data).hexdigest()
    stored = client.get_object(Bucket=s3_bucket, Key=f"images/{sha}")
    assert stored["Body"].read() == data
    assert stored["ContentType"] == "image/jpeg"


def test_s3_import_from_a_missing_bucket_is_a_clear_error(project, s3_source):
    with pytest.raises(DomainError, match="does not exist"):
        images_import(project=project, source="s3://no-such-bucket-here/x")
    assert Image.objects.count() == 0


def test_blob_store_down_fails_the_job_and_records_no_rows(project, tmp_path, monkeypatch):
    from storage.blobs import reset_blob_store
    from tests.s3server import S3_TEST_ENV, free_port

    for name, value in S3_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    make_folder(tmp_path / "src", 3)
    dead = f"http://127.0.0.1:{free_port()}"
    with override_settings(
        STORAGE_BACKEND="s3", S3_BUCKET="down", S3_ENDPOINT_URL=dead, S3_MAX_ATTEMPTS=1
    ):
        reset_blob_store()
        with pytest.raises(BlobStoreUnavailable, match="cannot reach"):
            images_import(project=project, source=str(tmp_path / "src"))
    reset_blob_store()
    job = Job.objects.get()
    assert job.status == "failed"
    assert job.error.startswith("BlobStoreUnavailable")
    assert Image.objects.count() == 0


def test_cancelling_the_job_stops_the_import(project, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "_PROGRESS_EVERY", 1)
    monkeypatch.setattr(ingest, "_LOOKAHEAD", 1)  # one row per transaction
    make_folder(tmp_path / "src", 12)

    def cancel_after_three(done, total, outcome):
        if done == 3:
            job_cancel(job_id=Job.objects.get().pk)

    with pytest.raises(JobCancelled):
        images_import(project=project, source=str(tmp_path / "src"), progress=cancel_after_three)
    assert Job.objects.get().status == "cancelled"
    assert Image.objects.count() == 3


def test_a_single_thread_imports_the_same_rows_in_the_same_order(project, tmp_path):
    make_folder(tmp_path / "src", 9)
    summary = images_import(project=project, source=str(tmp_path / "src"), threads=1)
    assert summary.imported == 9
    names = list(Image.objects.order_by("id").values_list("file_name", flat=True))
    assert names == sorted(names, key=lambda n: (int(n[3:6]) % 3, n))


def test_same_bytes_twice_in_one_folder_import_once(project, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = jpeg_bytes(seed=3)
    (src / "a.jpg").write_bytes(data)
    (src / "b.jpg").write_bytes(data)
    (src / "c.jpg").write_bytes(jpeg_bytes(seed=4))
    summary = images_import(project=project, source=str(src))
    assert summary.line == "imported 2, duplicate 1, rejected 0"
    assert list(Image.objects.values_list("file_name", flat=True)) == ["a.jpg", "c.jpg"]


def test_rows_committed_by_a_concurrent_import_become_duplicates(project, tmp_path, monkeypatch):
    make_folder(tmp_path / "src", 4)
    images_import(project=project, source=str(tmp_path / "src"))
    # As if another import committed the same bytes between our lookup and our insert.
    monkeypatch.setattr(ingest, "images_by_sha", lambda **kwargs: {})
    summary = images_import(project=project, source=str(tmp_path / "src"))
    assert summary.line == "imported 0, duplicate 4, rejected 0"
    assert Image.objects.count() == 4
