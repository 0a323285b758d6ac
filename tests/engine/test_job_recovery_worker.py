"""A real Celery worker on ``make run``'s folder broker finishes the embedding job of a worker
that died in the middle of it (the state a SIGKILL leaves: the row ``running``, its runner an
ended process, the taken message gone from the folder): at start it recovers the job and runs
its remaining chunks to the end. And the job of a message a worker took but had not started
when it was killed (a countdown) is not lost either."""

import os
import signal
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings
from kombu import Connection

from annotation.models import Image, Project
from engine.models import Job, ModelVersion
from engine.services.embeddings import embedding_load
from engine.services.jobs import job_create
from tests.engine.automatic_helpers import deployed_project
from tests.engine.test_job_recovery import HOST, ended_pid
from tests.workers import celery_worker, wait_or_fail

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

JOB_TIMEOUT_S = 240
FOLDER_BROKER = {
    "CELERY_BROKER_URL": "filesystem://localhost//",
    "MASKLOOP_DEVICE": "cpu",
    "OMP_NUM_THREADS": "1",
}


def embedding_job(project: Project, version: ModelVersion, images: list[Image]) -> Job:
    """A queued embedding job of the images, two a chunk."""
    return job_create(
        kind=Job.Kind.EMBED,
        project=project,
        params={"model_version_id": version.pk, "chunk": 2},
        total=len(images),
    )


def run_until_finished(job: Job, log: Path, what: str) -> None:
    """A folder-broker worker, until ``job`` is finished (it recovers it at start)."""
    with celery_worker(queue="default,gpu", log=log, extra_env=FOLDER_BROKER):

        def finished() -> bool:
            job.refresh_from_db()
            return job.is_finished

        wait_or_fail(finished, JOB_TIMEOUT_S, what, log)


def test_a_worker_started_after_a_crash_finishes_the_dead_workers_embedding_job(
    tmp_path: Path,
) -> None:
    project, version, images = deployed_project("worker died", 5)
    job = embedding_job(project, version, images)
    # Where the dead worker stopped: its first chunk done, the second one's message taken.
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING,
        runner=f"{HOST}:{ended_pid()}",
        celery_task_id="lost-task",
        attempts=1,
        result={"cursor": images[1].pk, "done": 2, "computed": 0, "skipped": 0, "failed": {}},
        progress_done=2,
    )
    log = tmp_path / "worker.log"
    run_until_finished(job, log, "the recovered job did not finish")
    assert job.status == Job.Status.SUCCEEDED, (job.status, job.error)
    assert job.recoveries == 1
    assert job.result["done"] == len(images)
    assert "engine.tasks.jobs_recover" in log.read_text()
    # The images after the dead worker's cursor were embedded by the new worker.
    for image in images[2:]:
        assert embedding_load(image=image, model_version=version) is not None


def test_a_job_whose_message_a_killed_worker_held_is_run_by_the_next_worker(
    tmp_path: Path,
) -> None:
    project, version, images = deployed_project("held message", 3)
    job = embedding_job(project, version, images)
    # The worker takes the message from the folder at once and holds it for its countdown.
    folder = Path(settings.VAR_DIR) / "celery-broker"
    folder.mkdir(parents=True, exist_ok=True)
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    with Connection("filesystem://localhost//", transport_options=options) as connection:
        Celery("held-message-test").send_task(
            "engine.tasks.gpu_precompute_embeddings",
            args=[job.pk],
            queue="gpu",
            countdown=3600,
            connection=connection,
        )
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with celery_worker(queue="default,gpu", log=first_log, extra_env=FOLDER_BROKER):

        def held() -> bool:
            job.refresh_from_db()
            return job.runner != ""

        wait_or_fail(held, 60, "the worker did not record that it holds the job", first_log)
        assert not list(folder.glob("*.msg"))
        os.kill(int(job.runner.rpartition(":")[2]), signal.SIGKILL)
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED  # the message died with the worker
    run_until_finished(job, second_log, "the held job was not run")
    assert job.status == Job.Status.SUCCEEDED, (job.status, job.error)
    assert job.recoveries == 1
    assert "the process holding its message" in second_log.read_text()
    for image in images:
        assert embedding_load(image=image, model_version=version) is not None
