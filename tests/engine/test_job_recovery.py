"""Jobs whose process died, on the folder broker (engine/services/job_recovery.py): found by
their recorded ``host:pid`` (real ended and live processes here), queued again by kind,
resumed (automatic runs, then run to the end), failed with a reason (imports, too many deaths),
and left alone on other brokers and for live, foreign or unrecorded runners."""

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.test import override_settings
from kombu import Connection

from annotation.models import Project
from annotation.services.export import export_run, export_start
from annotation.services.projects import membership_set
from engine.models import Job
from engine.services import job_recovery
from engine.services.automatic import automatic_start
from engine.services.job_recovery import MAX_RECOVERIES, jobs_recover, runner_gone
from engine.services.jobs import job_create, job_progress, job_start
from tests.engine.automatic_helpers import FAST, Queue, deployed_project, masks_per_image

pytestmark = pytest.mark.django_db

FOLDER = override_settings(CELERY_BROKER_URL="filesystem://localhost//")
HOST = socket.gethostname()


def ended_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    process = subprocess.Popen(["sleep", "120"])
    yield process.pid
    process.kill()
    process.wait()


class SentTasks:
    """Stands in for Celery's send_task: records what would go to the broker."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append({"name": name, **options})


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> SentTasks:
    tasks = SentTasks()
    monkeypatch.setattr(job_recovery, "current_app", tasks)
    return tasks


def running(kind: str, runner: str, project: Project | None = None, **fields: Any) -> Job:
    job = job_create(kind=kind, project=project, total=10)
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.RUNNING, runner=runner, celery_task_id=f"task-{job.pk}", **fields
    )
    job.refresh_from_db()
    return job


def test_job_start_records_the_process_that_runs_it(project: Project) -> None:
    job = job_create(kind=Job.Kind.EXPORT, project=project)
    started = job_start(job_id=job.pk)
    assert started is not None
    assert started.runner == f"{HOST}:{os.getpid()}"


def test_runner_gone_only_for_an_ended_process_of_this_host(live_pid: int) -> None:
    assert runner_gone(f"{HOST}:{ended_pid()}")
    assert not runner_gone(f"{HOST}:{live_pid}")
    assert not runner_gone(f"{HOST}:{os.getpid()}")
    assert not runner_gone(f"another-host:{ended_pid()}")
    assert not runner_gone("")
    assert not runner_gone(f"{HOST}:not-a-pid")


@pytest.mark.parametrize(
    ("kind", "task", "queue", "priority"),
    [
        (Job.Kind.EXPORT, "annotation.tasks.export_dataset", "default", None),
        (Job.Kind.TRAIN, "training.tasks.gpu_train_round", "gpu", None),
        (Job.Kind.EMBED, "engine.tasks.gpu_precompute_embeddings", "gpu", 9),
        (Job.Kind.REMOVE_IMAGES, "annotation.tasks.purge_removed_images", "default", None),
        (Job.Kind.DELETE_PROJECT, "annotation.tasks.purge_deleted_project", "default", None),
    ],
)
def test_a_dead_processs_job_is_queued_again_with_its_task(
    project: Project,
    sent: SentTasks,
    django_capture_on_commit_callbacks: Any,
    kind: str,
    task: str,
    queue: str,
    priority: int | None,
) -> None:
    job = running(kind, f"{HOST}:{ended_pid()}", project)
    with FOLDER, django_capture_on_commit_callbacks(execute=True):
        assert jobs_recover() == [job.pk]
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    assert job.recoveries == 1
    assert job.runner == ""
    assert "stopped: queued again" in job.message
    expected: dict[str, Any] = {
        "name": task, "args": [job.pk], "task_id": f"task-{job.pk}", "queue": queue,
    }  # fmt: skip
    if priority is not None:
        expected["priority"] = priority
    assert sent.sent == [expected]


def test_live_foreign_and_unrecorded_runners_are_left_alone(
    project: Project, sent: SentTasks, live_pid: int
) -> None:
    jobs = [
        running(Job.Kind.EXPORT, f"{HOST}:{live_pid}", project),
        running(Job.Kind.EXPORT, f"{HOST}:{os.getpid()}", project),
        running(Job.Kind.EXPORT, f"elsewhere:{ended_pid()}", project),
        running(Job.Kind.EXPORT, "", project),
    ]
    with FOLDER:
        assert jobs_recover() == []
    assert {job.status for job in Job.objects.filter(pk__in=[j.pk for j in jobs])} == {"running"}
    assert sent.sent == []


def test_other_brokers_redeliver_themselves_so_nothing_is_done(
    project: Project, sent: SentTasks
) -> None:
    job = running(Job.Kind.EXPORT, f"{HOST}:{ended_pid()}", project)
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/0"):
        assert jobs_recover() == []
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert sent.sent == []


def test_finished_jobs_are_not_touched(project: Project, sent: SentTasks) -> None:
    job = running(Job.Kind.EXPORT, f"{HOST}:{ended_pid()}", project)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    with FOLDER:
        assert jobs_recover() == []
    assert sent.sent == []


@pytest.mark.parametrize(
    ("kind", "skipped"),
    [(Job.Kind.INGEST, "stored files"), (Job.Kind.IMPORT_MASKS, "masks imported already")],
)
def test_an_import_whose_process_died_fails_with_what_to_do(
    project: Project, sent: SentTasks, kind: str, skipped: str
) -> None:
    job = running(kind, f"{HOST}:{ended_pid()}", project)
    with FOLDER:
        assert jobs_recover() == [job.pk]
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert f"run the import again ({skipped} are skipped)" in job.error
    assert sent.sent == []


def test_a_job_whose_process_keeps_dying_fails_instead_of_running_for_ever(
    project: Project, sent: SentTasks
) -> None:
    job = running(Job.Kind.TRAIN, f"{HOST}:{ended_pid()}", project, recoveries=MAX_RECOVERIES)
    with FOLDER:
        assert jobs_recover() == [job.pk]
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert f"{MAX_RECOVERIES + 1} times" in job.error
    assert "out of memory" in job.error
    assert sent.sent == []


def test_a_requeued_export_then_runs_to_its_end(
    project: Project, sent: SentTasks, django_capture_on_commit_callbacks: Any
) -> None:
    job = export_start(project=project, fmt="coco", user=None, enqueue=False)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, runner=f"{HOST}:{ended_pid()}")
    with FOLDER, django_capture_on_commit_callbacks(execute=True):
        assert jobs_recover() == [job.pk]
    (task,) = sent.sent
    export_run(job_id=task["args"][0])  # what the worker does with the message
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert job.runner == f"{HOST}:{os.getpid()}"


def automatic_run_lost(
    queue: Queue, user: Any, name: str, *, chunk: int, in_flight: int
) -> tuple[Job, list[Any]]:
    """An automatic run on 3 images whose queued chunks are gone (a dead worker took them)."""
    project, _, images = deployed_project(name, 3)
    job = queue.call(
        automatic_start, project=project, user=user, params=FAST, chunk=chunk, in_flight=in_flight
    )
    queue.sent.clear()
    return job, images


def test_an_automatic_run_is_resumed_and_finishes_every_image(
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
    fresh_model_cache: Any,
    admin_user: Any,
) -> None:
    queue = Queue(monkeypatch, django_capture_on_commit_callbacks)
    # The chunk the killed worker had taken: lost with it.
    job, images = automatic_run_lost(queue, admin_user, "killed run", chunk=3, in_flight=1)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, runner=f"{HOST}:{ended_pid()}")
    with FOLDER:
        assert queue.call(jobs_recover) == [job.pk]
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    assert job.recoveries == 1
    queue.drain()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert set(masks_per_image(job)) == {image.pk for image in images}


def folder_messages(folder: Path, *tasks: tuple[str, list[int], str]) -> None:
    """Put real task messages (name, args, queue) into a broker folder (a connection of its
    own: Celery's app takes its broker from $CELERY_BROKER_URL, the tests' Redis)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    app = Celery("folder-test")
    with Connection("filesystem://localhost//", transport_options=options) as connection:
        for name, args, queue in tasks:
            app.send_task(name, args=args, queue=queue, connection=connection)
    assert len(list(folder.glob("*.msg"))) == len(tasks)


def test_a_job_with_a_message_waiting_in_the_folder_goes_on_by_itself(
    project: Project, sent: SentTasks, tmp_path: Path
) -> None:
    """An embedding job between two chunks, its worker restarted: the next chunk's message is
    still in the folder, so the job is not queued twice."""
    folder = tmp_path / "broker"
    waiting = running(Job.Kind.EMBED, f"{HOST}:{ended_pid()}", project)
    lost = running(Job.Kind.EMBED, f"{HOST}:{ended_pid()}", project)
    folder_messages(
        folder,
        ("engine.tasks.gpu_precompute_embeddings", [waiting.pk], "gpu"),
        ("engine.tasks.gpu_compute_embedding", [lost.pk, 1], "gpu"),  # not a job's task
    )
    (folder / "broken.gpu.msg").write_text("not json")
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    with FOLDER, override_settings(CELERY_BROKER_TRANSPORT_OPTIONS=options):
        assert job_recovery.queued_job_ids() == {waiting.pk}
        assert jobs_recover() == [lost.pk]
    waiting.refresh_from_db()
    assert waiting.status == Job.Status.RUNNING


def test_progress_names_the_process_that_reports_it(project: Project) -> None:
    job = running(Job.Kind.EMBED, f"{HOST}:{ended_pid()}", project)
    job_progress(job_id=job.pk, done=3)
    job.refresh_from_db()
    assert job.runner == f"{HOST}:{os.getpid()}"


def test_the_api_shows_how_often_a_job_was_recovered(
    project: Project,
    sent: SentTasks,
    admin_user: Any,
    admin_client: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    membership_set(project=project, user=admin_user, role="admin")
    job = running(Job.Kind.EXPORT, f"{HOST}:{ended_pid()}", project, recoveries=1)
    with FOLDER, django_capture_on_commit_callbacks(execute=True):
        assert jobs_recover() == [job.pk]
    answer = admin_client.get(f"/api/jobs/{job.pk}/")
    assert answer.status_code == 200, answer.content
    assert answer.json()["recoveries"] == 2
    assert answer.json()["status"] == "queued"
    assert "runner" not in answer.json()  # host names and pids stay on the server
