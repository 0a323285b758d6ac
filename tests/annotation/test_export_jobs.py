"""Export as a job: queueing, reruns, failure cleanup, cancellation, the task, the command."""

import io
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation import tasks
from annotation.models import Mask, Project
from annotation.services import export as export_service
from annotation.services.export import export_run, export_start
from annotation.services.review import mask_approve
from engine.models import Job
from engine.services.jobs import job_cancel, job_start
from storage.blobs import BlobStoreUnavailable, get_blob_store
from storage.blobs.local import LocalBlobStore
from tests.annotation.test_export import SIZES, Dataset, build_dataset, run_export
from tests.factories import manage_in_child

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset() -> Dataset:
    return build_dataset(Project.objects.create(name="Street Scenes"))


def exported_keys(job: Job) -> list[str]:
    return list(get_blob_store().list(f"exports/{job.pk}/"))


def fail_puts(monkeypatch, exc: Exception, *, when=lambda key, calls: True) -> list[str]:
    """Make LocalBlobStore.put_file raise ``exc`` for keys where ``when(key, calls)``."""
    calls: list[str] = []
    original = LocalBlobStore.put_file

    def put_file(self, key, fileobj, *, content_type=None):
        calls.append(key)
        if when(key, len(calls)):
            raise exc
        return original(self, key, fileobj, content_type=content_type)

    monkeypatch.setattr(LocalBlobStore, "put_file", put_file)
    return calls


def test_export_start_queues_the_task_on_the_default_queue_after_commit(
    dataset, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[dict] = []
    monkeypatch.setattr(tasks.export_dataset, "apply_async", lambda **kw: sent.append(kw))
    with django_capture_on_commit_callbacks(execute=True):
        job = export_start(project=dataset.project, fmt="coco")
        assert sent == []  # nothing is sent before the transaction commits
    assert sent == [{"args": [job.pk], "task_id": job.celery_task_id, "queue": "default"}]
    job.refresh_from_db()
    assert job.kind == Job.Kind.EXPORT
    assert job.status == Job.Status.QUEUED
    assert job.params["format"] == "coco"
    assert job.params["shard_size"] == settings.MASKLOOP_SA1B_SHARD_SIZE


def test_rerunning_a_finished_job_does_nothing(dataset):
    job = run_export(dataset.project, "coco")
    key = job.result["files"][0]["key"]
    get_blob_store().delete(key)
    assert export_run(job_id=job.pk) is None
    job.refresh_from_db()
    assert job.attempts == 1
    assert job.status == Job.Status.SUCCEEDED
    assert not get_blob_store().exists(key)  # nothing was written again


def test_a_redelivered_unfinished_job_replaces_what_the_interrupted_attempt_left(dataset, tmp_path):
    out = tmp_path / "out"
    job = export_start(
        project=dataset.project, fmt="sa1b", shard_size=2, out=str(out), enqueue=False
    )
    job_start(job_id=job.pk)  # attempt 1 started, then its worker died
    get_blob_store().put_bytes(f"exports/{job.pk}/sa_000007.tar", b"stale")
    out.mkdir()
    (out / "sa_000007.tar").write_bytes(b"stale")
    result = export_run(job_id=job.pk)
    assert result is not None
    job.refresh_from_db()
    assert job.attempts == 2
    assert [f["name"] for f in result["files"]] == [
        "sa_000000.tar",
        "sa_000001.tar",
        "sa_000002.tar",
    ]
    assert exported_keys(job) == [f["key"] for f in result["files"]]
    assert sorted(p.name for p in out.iterdir()) == [f["name"] for f in result["files"]]


def test_a_failed_export_removes_its_partial_outputs(dataset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    job = export_start(
        project=dataset.project, fmt="sa1b", shard_size=1, out=str(out), enqueue=False
    )
    fail_puts(monkeypatch, OSError("disk full"), when=lambda key, n: key.endswith("002.tar"))
    with pytest.raises(OSError, match="disk full"):
        export_run(job_id=job.pk)
    assert exported_keys(job) == []
    assert list(out.iterdir()) == []
    assert list((Path(settings.VAR_DIR) / "tmp").glob(f"export-{job.pk}-*")) == []


def test_cancelling_a_running_export_stops_it_and_leaves_no_files(dataset, monkeypatch):
    monkeypatch.setattr(export_service, "PROGRESS_EVERY", 1)
    job = export_start(project=dataset.project, fmt="sa1b", shard_size=1, enqueue=False)
    reports: list[int] = []

    def cancel_after_two_images(done: int, total: int) -> None:
        reports.append(done)
        if done == 7:  # past the second image's masks: shard 0 and 1 are published
            job_cancel(job_id=job.pk)

    assert export_run(job_id=job.pk, on_progress=cancel_after_two_images) is None
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert max(reports) == 7  # it stopped at the first report after the cancel
    assert exported_keys(job) == []


# --- the Celery task, run eagerly ---------------------------------------------------------


def test_task_runs_the_export_and_marks_the_job_succeeded(dataset):
    job = export_start(project=dataset.project, fmt="coco", enqueue=False)
    tasks.export_dataset.apply(args=(job.pk,))
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert len(exported_keys(job)) == 1


def test_task_retries_a_transient_blob_store_error_then_succeeds(dataset, monkeypatch):
    job = export_start(project=dataset.project, fmt="coco", enqueue=False)
    fail_puts(monkeypatch, BlobStoreUnavailable("S3 answered 503"), when=lambda key, n: n == 1)
    tasks.export_dataset.apply(args=(job.pk,))
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert job.attempts == 2
    assert len(exported_keys(job)) == 1


def test_task_gives_up_after_its_retries_and_marks_the_job_failed(dataset, monkeypatch):
    job = export_start(project=dataset.project, fmt="coco", enqueue=False)
    fail_puts(monkeypatch, BlobStoreUnavailable("S3 answered 503"))
    tasks.export_dataset.apply(args=(job.pk,))
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert tasks.export_dataset.max_retries == 5
    assert job.attempts == 6  # the first try and five retries
    assert job.error == "BlobStoreUnavailable: S3 answered 503"


def test_task_does_not_retry_other_errors_and_marks_the_job_failed(dataset, monkeypatch):
    job = export_start(project=dataset.project, fmt="coco", enqueue=False)
    fail_puts(monkeypatch, ValueError("bad bytes"))
    tasks.export_dataset.apply(args=(job.pk,))
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.attempts == 1
    assert job.error == "ValueError: bad bytes"


# --- the management command ---------------------------------------------------------------


def test_command_exports_and_prints_where_the_files_went(dataset, tmp_path):
    out = tmp_path / "folder"
    stdout = io.StringIO()
    call_command(
        "export_dataset", "Street Scenes", "--format", "coco", "--out", str(out),
        "--no-progress", stdout=stdout,
    )  # fmt: skip
    job = Job.objects.get()
    text = stdout.getvalue()
    assert f"exported {3 * len(SIZES)} masks of {len(SIZES)} images as coco (job #{job.pk})" in text
    assert f"{get_blob_store().location}/exports/{job.pk}/street-scenes-coco.json" in text
    assert f"{out}/street-scenes-coco.json" in text
    assert (out / "street-scenes-coco.json").is_file()
    assert job.status == Job.Status.SUCCEEDED


def test_command_exports_only_reviewed_masks_with_reviewed(dataset):
    reviewer = User.objects.create_user("rita")
    approved = Mask.objects.filter(project=dataset.project, status="accepted").first()
    assert approved is not None
    mask_approve(mask=approved, reviewer=reviewer)
    stdout = io.StringIO()
    call_command(
        "export_dataset", "Street Scenes", "--format", "coco", "--reviewed", "--no-progress",
        stdout=stdout,
    )  # fmt: skip
    job = Job.objects.get()
    assert job.params["reviewed"] is True
    assert "exported 1 masks of 1 images as coco" in stdout.getvalue()


def test_command_refuses_an_unknown_project(db):
    with pytest.raises(CommandError, match="unknown project 'nope'"):
        call_command("export_dataset", "nope", "--format", "coco")
    assert Job.objects.count() == 0


def test_command_refuses_an_unwritable_out_and_creates_no_job(dataset, tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command(
            "export_dataset", "Street Scenes", "--format", "sa1b", "--out",
            str(tmp_path / "no" / "such" / "dir"),
        )  # fmt: skip
    assert Job.objects.count() == 0


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py`` in a subprocess on this test's database and blob folder."""
    env = {"BLOB_ROOT": str(settings.BLOB_ROOT), "MASKLOOP_VAR_DIR": str(settings.VAR_DIR)}
    return manage_in_child(*args, env=env)


@pytest.mark.django_db(transaction=True)
def test_command_exit_codes(tmp_path):
    build_dataset(Project.objects.create(name="Street Scenes"))
    ok = manage("export_dataset", "Street Scenes", "--format", "sa1b", "--no-progress")
    assert ok.returncode == 0, ok.stderr
    assert "exported 15 masks of 5 images as sa1b" in ok.stdout
    unknown = manage("export_dataset", "nope", "--format", "coco")
    assert unknown.returncode == 1
    assert "unknown project 'nope'" in unknown.stderr
    file = tmp_path / "plain-file"
    file.write_text("x")
    bad_out = manage("export_dataset", "Street Scenes", "--format", "coco", "--out", f"{file}/x")
    assert bad_out.returncode == 1
    assert "does not exist" in bad_out.stderr
    bad_format = manage("export_dataset", "Street Scenes", "--format", "voc")
    assert bad_format.returncode == 2
    assert "invalid choice: 'voc'" in bad_format.stderr
    assert Job.objects.filter(status=Job.Status.SUCCEEDED).count() == 1
    assert Job.objects.count() == 1
