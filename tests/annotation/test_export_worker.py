"""A real Celery worker process takes an export job from Redis and runs it to the end."""

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from annotation.models import Project
from annotation.services.export import export_start
from engine.models import Job
from storage.blobs import get_blob_store
from tests.annotation.test_export import SIZES, build_dataset
from tests.workers import celery_worker, wait_or_fail

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

READY_TIMEOUT_S = 30
JOB_TIMEOUT_S = 60


@pytest.fixture
def worker(redis_broker: redis.Redis, tmp_path: Path) -> Iterator[Path]:
    """A ``celery worker -Q default --pool solo`` on the test database and blob folder; yields
    the path of its log."""
    with celery_worker(
        queue="default", log=tmp_path / "worker.log", ready_timeout=READY_TIMEOUT_S
    ) as log:
        yield log


def test_a_real_worker_runs_a_queued_sa1b_export_to_the_end(worker):
    dataset = build_dataset(Project.objects.create(name="worker export"))
    job = export_start(project=dataset.project, fmt="sa1b", shard_size=10)

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_or_fail(finished, JOB_TIMEOUT_S, "the export job did not finish", worker)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.attempts == 1
    [file] = job.result["files"]
    assert file["key"] == f"exports/{job.pk}/sa_000000.tar"
    data = get_blob_store().get_bytes(file["key"])
    assert len(data) == file["bytes"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        first = tar.extractfile(f"sa_{dataset.images[0].pk}.json")
        assert first is not None
        document = json.loads(first.read())
    assert len(names) == 2 * len(SIZES)  # one JSON and one image file per image
    assert {a["id"] for a in document["annotations"]} == set(
        dataset.images[0].masks.filter(status="accepted").values_list("id", flat=True)
    )


def test_a_real_worker_deletes_the_files_of_removed_images_and_of_a_deleted_project(worker):
    from annotation.services.image_removal import images_remove
    from annotation.services.project_deletion import project_delete
    from tests.annotation.test_export import add_image

    project = Project.objects.create(name="worker removal")
    images = [add_image(project, 40, 30, seed) for seed in range(3)]
    store = get_blob_store()
    removal = images_remove(project=project, image_ids=[images[0].pk]).job

    def done(job: Job) -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_or_fail(lambda: done(removal), JOB_TIMEOUT_S, "the removal did not finish", worker)
    assert removal.status == "succeeded", removal.error
    deletion = project_delete(project=project, confirm="worker removal").job
    wait_or_fail(lambda: done(deletion), JOB_TIMEOUT_S, "the deletion did not finish", worker)
    assert deletion.status == "succeeded", deletion.error
    assert removal.result["blobs"]["deleted"] == 1
    assert deletion.result["blobs"]["deleted"] == 2
    assert not any(store.exists(image.blob_key) for image in images)
