"""Queued jobs whose message a worker took from the folder broker and then died with
(engine/services/job_recovery.py): the worker that takes a job's message is recorded as the
job's runner (Celery's ``task_received``, in the worker's main process), so a job it held but
never started (a countdown, a busy pool) is recovered like a started one; a queued job with a
live holder, no holder or a message still waiting is left alone."""

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings

from annotation.models import Project
from engine.models import Job
from engine.services import job_recovery
from engine.services.job_recovery import job_received, jobs_recover
from engine.services.jobs import job_create, job_fail, job_start
from engine.tasks import _job_message_received
from tests.engine.automatic_helpers import Queue, masks_per_image
from tests.engine.test_job_recovery import (
    FOLDER,
    HOST,
    SentTasks,
    automatic_run_lost,
    ended_pid,
    folder_messages,
    live_pid,
    sent,
)

pytestmark = pytest.mark.django_db

__all__ = ["live_pid", "sent"]  # fixtures, imported to be used here

THIS_PROCESS = f"{HOST}:{os.getpid()}"


def queued(kind: str, runner: str, project: Project | None = None) -> Job:
    job = job_create(kind=kind, project=project, total=10)
    Job.objects.filter(pk=job.pk).update(runner=runner, celery_task_id=f"task-{job.pk}")
    job.refresh_from_db()
    return job


def test_the_worker_that_takes_a_queued_jobs_message_becomes_its_runner(project: Project) -> None:
    job = job_create(kind=Job.Kind.EXPORT, project=project)
    with FOLDER:
        assert job_received(job.pk)
    job.refresh_from_db()
    assert (job.status, job.runner) == (Job.Status.QUEUED, THIS_PROCESS)


def test_a_started_or_finished_job_keeps_its_runner(project: Project) -> None:
    started = job_create(kind=Job.Kind.EXPORT, project=project)
    Job.objects.filter(pk=started.pk).update(status=Job.Status.RUNNING, runner="elsewhere:1")
    finished = job_create(kind=Job.Kind.EXPORT, project=project)
    job_fail(job_id=finished.pk, error="broken")
    with FOLDER:
        assert not job_received(started.pk)
        assert not job_received(finished.pk)
    started.refresh_from_db()
    finished.refresh_from_db()
    assert started.runner == "elsewhere:1"
    assert finished.runner == ""


def test_other_brokers_record_nothing(project: Project) -> None:
    """Redis and RabbitMQ redeliver a dead worker's messages themselves (the tests' broker is
    Redis)."""
    job = job_create(kind=Job.Kind.EXPORT, project=project)
    assert not job_received(job.pk)
    job.refresh_from_db()
    assert job.runner == ""


def test_a_queued_job_whose_holder_died_is_queued_again(
    project: Project, sent: SentTasks, django_capture_on_commit_callbacks: Any
) -> None:
    job = queued(Job.Kind.EXPORT, f"{HOST}:{ended_pid()}", project)
    with FOLDER, django_capture_on_commit_callbacks(execute=True):
        assert jobs_recover() == [job.pk]
    job.refresh_from_db()
    assert (job.status, job.recoveries, job.runner) == (Job.Status.QUEUED, 1, "")
    assert "holding its message" in job.message
    assert [(task["name"], task["args"], task["task_id"]) for task in sent.sent] == [
        ("annotation.tasks.export_dataset", [job.pk], f"task-{job.pk}")
    ]


def test_queued_jobs_with_a_live_holder_or_no_holder_are_left_alone(
    project: Project, sent: SentTasks, live_pid: int
) -> None:
    held = queued(Job.Kind.TRAIN, f"{HOST}:{live_pid}", project)
    waiting_for_a_worker = queued(Job.Kind.EMBED, "", project)
    with FOLDER:
        assert jobs_recover() == []
    assert sent.sent == []
    for job in (held, waiting_for_a_worker):
        job.refresh_from_db()
        assert (job.status, job.recoveries) == (Job.Status.QUEUED, 0)


def test_a_queued_job_whose_message_went_back_to_the_folder_is_left_alone(
    project: Project, sent: SentTasks, tmp_path: Path
) -> None:
    """A worker stopped with Ctrl+C puts the messages it held back into the folder; the next
    worker takes them (and becomes the job's runner)."""
    folder = tmp_path / "broker"
    job = queued(Job.Kind.EMBED, f"{HOST}:{ended_pid()}", project)
    folder_messages(folder, ("engine.tasks.gpu_precompute_embeddings", [job.pk], "gpu"))
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    with FOLDER, override_settings(CELERY_BROKER_TRANSPORT_OPTIONS=options):
        assert jobs_recover() == []
    assert sent.sent == []


def test_a_job_started_meanwhile_is_not_recovered(project: Project, sent: SentTasks) -> None:
    """Between the scan and the row lock, a live worker started the job: it is its own now."""
    job = queued(Job.Kind.EXPORT, f"{HOST}:{ended_pid()}", project)
    job_start(job_id=job.pk)  # this process: alive
    with FOLDER:
        assert not job_recovery._recover(job.pk)
    job.refresh_from_db()
    assert (job.status, job.recoveries) == (Job.Status.RUNNING, 0)


def test_a_queued_automatic_run_whose_holder_died_is_resumed_to_the_end(
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
    fresh_model_cache: Any,
    admin_user: Any,
) -> None:
    queue = Queue(monkeypatch, django_capture_on_commit_callbacks)
    # Both chunks were held by the worker that died.
    job, images = automatic_run_lost(queue, admin_user, "held chunks", chunk=2, in_flight=2)
    Job.objects.filter(pk=job.pk).update(runner=f"{HOST}:{ended_pid()}")
    with FOLDER:
        assert queue.call(jobs_recover) == [job.pk]
    job.refresh_from_db()
    assert (job.status, job.recoveries, job.runner) == (Job.Status.QUEUED, 1, "")
    queue.drain()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert set(masks_per_image(job)) == {image.pk for image in images}


@pytest.mark.django_db(transaction=True)  # as in the worker: outside any transaction
def test_the_worker_signal_records_job_tasks_only(project: Project) -> None:
    job = job_create(kind=Job.Kind.EMBED, project=project)
    other = job_create(kind=Job.Kind.EMBED, project=project)

    def message(name: str, args: list[Any]) -> SimpleNamespace:
        return SimpleNamespace(name=name, args=args, id="task-id")

    with FOLDER:
        # An image's embedding task carries an image id first, not a job id.
        _job_message_received(request=message("engine.tasks.gpu_compute_embedding", [other.pk]))
        _job_message_received(request=message("engine.tasks.gpu_precompute_embeddings", ["x"]))
        _job_message_received(request=message("engine.tasks.gpu_precompute_embeddings", []))
        _job_message_received(request=message("engine.tasks.gpu_precompute_embeddings", [job.pk]))
    job.refresh_from_db()
    other.refresh_from_db()
    assert job.runner == THIS_PROCESS
    assert other.runner == ""
