"""A real Celery worker on the ``gpu`` queue runs a bulk embedding job to the end."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from annotation.models import Project
from engine.models import Job
from engine.services.embeddings import embedding_load, embeddings_precompute_start
from engine.services.registry import model_version_deploy
from tests.engine.conftest import add_images, register_golden
from tests.workers import celery_worker, wait_or_fail

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

READY_TIMEOUT_S = 60
JOB_TIMEOUT_S = 120


@pytest.fixture
def gpu_worker(redis_broker: redis.Redis, tmp_path: Path) -> Iterator[Path]:
    """``celery worker -Q gpu --pool solo`` on the test database and blob folder (CPU)."""
    with celery_worker(
        queue="gpu",
        log=tmp_path / "worker.log",
        ready_timeout=READY_TIMEOUT_S,
        extra_env={"MASKLOOP_DEVICE": "cpu"},
    ) as log:
        yield log


def test_a_real_gpu_queue_worker_precomputes_a_projects_embeddings(gpu_worker, settings):
    settings.MASKLOOP_EMBEDDING_CHUNK = 2  # 3 images: two chained chunks
    project = Project.objects.create(name="worker embeddings")
    version = register_golden(project)
    model_version_deploy(project=project, version=version)
    images = add_images(project, 3)
    job = embeddings_precompute_start(project=project)

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_or_fail(finished, JOB_TIMEOUT_S, "the embedding job did not finish", gpu_worker)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert (job.progress_done, job.progress_total) == (3, 3)
    assert (job.result["computed"], job.result["skipped"]) == (3, 0)
    assert job.attempts == 1
    for image in images:
        stored = embedding_load(image=image, model_version=version)
        assert stored is not None
        assert stored.original_size == (image.height, image.width)
