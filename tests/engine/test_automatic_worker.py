"""Automatic runs on real ``gpu`` workers (Celery processes) against Redis and PostgreSQL:
a worker killed mid-chunk, a corrupt image, a deployment during the run, cancel then resume."""

import signal
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from django.db.models import Count
from kombu import Connection

from annotation.models import Mask
from config.celery import app as celery_app
from engine.models import AutomaticImage, Job
from engine.services.automatic import automatic_cancel, automatic_resume, automatic_start
from engine.services.registry import model_version_deploy
from tests.engine.automatic_helpers import FAST, corrupt, deployed_project, register_variant
from tests.workers import celery_worker, wait_or_fail

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ENV = {"MASKLOOP_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
RUN_TIMEOUT_S = 240
CHUNK_TASK = "engine.tasks.gpu_automatic_chunk"


def _worker_pid() -> int:
    """The one celery worker started by ``celery_worker`` (a direct child of this process)."""
    workers = [
        child
        for child in psutil.Process().children()
        if "worker" in child.cmdline() and "gpu" in child.cmdline()
    ]
    assert len(workers) == 1, workers
    return int(workers[0].pid)


def _redeliver_unacked() -> None:
    """What Redis' visibility timeout does after a while: requeue dead consumers' messages."""
    options = {"visibility_timeout": 0, "unacked_restore_throttle": 1}
    with Connection(str(celery_app.conf.broker_url), transport_options=options) as connection:
        channel: Any = connection.default_channel
        channel.qos.restore_visible(num=100, interval=1)


def _received(log: Path) -> int:
    """Chunk tasks the worker took (its log line ``Task <name>[<id>] received``)."""
    return sum(
        1
        for line in log.read_text().splitlines()
        if f"Task {CHUNK_TASK}[" in line and line.endswith("received")
    )


def _statuses(job: Job) -> dict[str, int]:
    rows = AutomaticImage.objects.filter(job=job).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def _finished(job: Job) -> Callable[[], bool]:
    def check() -> bool:
        job.refresh_from_db()
        return job.is_finished

    return check


def _one_set_of_masks_per_image(job: Job) -> None:
    """Every done image holds exactly the masks its row counted: nothing written twice."""
    stored = dict(
        Mask.objects.filter(job=job)
        .values("image_id")
        .annotate(n=Count("id"))
        .values_list("image_id", "n")
    )
    for row in AutomaticImage.objects.filter(job=job, status="done"):
        assert stored.get(row.image_id, 0) == row.masks, row.image_id
    assert sum(stored.values()) == job.result["masks"]


def test_a_worker_killed_mid_chunk_loses_nothing(redis_broker: redis.Redis, tmp_path: Path):
    project, _, _ = deployed_project("killed worker", 4)
    job = automatic_start(project=project, user=None, params=FAST, chunk=4, in_flight=1)
    first = tmp_path / "worker-1.log"
    with celery_worker(queue="gpu", log=first, extra_env=ENV):
        wait_or_fail(
            lambda: _statuses(job).get("done", 0) >= 1,
            RUN_TIMEOUT_S,
            "no image was done",
            first,
        )
        psutil.Process(_worker_pid()).send_signal(signal.SIGKILL)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert _statuses(job).get("pending", 0) >= 1  # killed in the middle of its chunk
    _redeliver_unacked()
    second = tmp_path / "worker-2.log"
    with celery_worker(queue="gpu", log=second, extra_env=ENV):
        wait_or_fail(_finished(job), RUN_TIMEOUT_S, "the run did not finish", second)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert _statuses(job) == {"done": 4}
    assert (job.result["done"], job.result["failed"], job.progress_done) == (4, 0, 4)
    _one_set_of_masks_per_image(job)
    assert _received(second) == 1  # the redelivered chunk


def test_a_corrupt_image_fails_with_its_reason_on_a_worker(
    redis_broker: redis.Redis, tmp_path: Path
):
    project, _, images = deployed_project("corrupt on worker", 3)
    corrupt(images[1])
    log = tmp_path / "worker.log"
    with celery_worker(queue="gpu", log=log, extra_env=ENV):
        job = automatic_start(project=project, user=None, params=FAST, chunk=2, in_flight=1)
        wait_or_fail(_finished(job), RUN_TIMEOUT_S, "the run did not finish", log)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert _statuses(job) == {"done": 2, "failed": 1}
    failed = AutomaticImage.objects.get(job=job, status="failed")
    assert failed.image_id == images[1].pk
    assert failed.error.startswith("the image cannot be read")
    assert not Mask.objects.filter(job=job, image=images[1]).exists()
    _one_set_of_masks_per_image(job)


def test_a_deployment_during_the_run_leaves_its_version_on_every_mask(
    redis_broker: redis.Redis, tmp_path: Path
):
    project, pinned, _ = deployed_project("deploy during run", 3)
    log = tmp_path / "worker.log"
    with celery_worker(queue="gpu", log=log, extra_env=ENV):
        job = automatic_start(project=project, user=None, params=FAST, chunk=1, in_flight=1)
        wait_or_fail(
            lambda: _statuses(job).get("done", 0) >= 1, RUN_TIMEOUT_S, "no image was done", log
        )
        model_version_deploy(project=project, version=register_variant(project, tmp_path))
        wait_or_fail(_finished(job), RUN_TIMEOUT_S, "the run did not finish", log)
    assert job.status == Job.Status.SUCCEEDED, job.error
    project.refresh_from_db()
    assert project.deployed_version_id != pinned.pk
    versions = set(Mask.objects.filter(job=job).values_list("model_version_id", flat=True))
    assert versions == {pinned.pk}
    rows = set(AutomaticImage.objects.filter(job=job).values_list("model_version_id", flat=True))
    assert rows == {pinned.pk}


def test_two_workers_share_a_run_and_cancel_then_resume_writes_one_set(
    redis_broker: redis.Redis, tmp_path: Path
):
    project, _, images = deployed_project("cancel resume on workers", 6)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    with ExitStack() as stack:
        for log in logs:
            stack.enter_context(celery_worker(queue="gpu", log=log, extra_env=ENV))
        job = automatic_start(project=project, user=None, params=FAST, chunk=2, in_flight=2)
        wait_or_fail(
            lambda: _statuses(job).get("done", 0) >= 1, RUN_TIMEOUT_S, "no image done", logs[0]
        )
        automatic_cancel(job_id=job.pk)

        def both_chunks_returned() -> bool:
            text = "".join(log.read_text() for log in logs)
            return text.count(f"Task {CHUNK_TASK}[") >= 2 and text.count("succeeded in") >= 2

        wait_or_fail(both_chunks_returned, RUN_TIMEOUT_S, "the chunks did not stop", logs[0])
        assert [_received(log) for log in logs] == [1, 1]  # one chunk each
        job.refresh_from_db()
        assert job.status == Job.Status.CANCELLED
        assert _statuses(job).get("pending", 0) >= 1
        automatic_resume(job_id=job.pk)
        wait_or_fail(_finished(job), RUN_TIMEOUT_S, "the resumed run did not finish", logs[1])
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert _statuses(job) == {"done": 6}
    assert job.result["done"] == 6
    _one_set_of_masks_per_image(job)
    assert set(Mask.objects.filter(job=job).values_list("image_id", flat=True)) == {
        image.pk for image in images
    }
