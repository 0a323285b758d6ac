"""A real ``gpu`` worker killed (SIGKILL) in the middle of a round: the redelivered task, taken
by a fresh worker on another "host" (the local work dir is gone), resumes from the training
state the first worker uploaded to the blob store and completes the round."""

import shutil
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from kombu import Connection

from config.celery import app as celery_app
from engine.models import Job
from storage.blobs import get_blob_store
from tests.training.rounds_data import add_scenes, deployed_parent
from tests.workers import celery_worker, wait_or_fail
from training.models import RoundSettings, TrainingRound
from training.services.round_run import state_key, work_dir_for
from training.services.rounds import round_launch

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ENV = {"MASKLOOP_DEVICE": "cpu"}
STEPS = 12


def _worker_pid() -> int:
    """The celery worker started by ``celery_worker`` (a direct child of this process)."""
    workers = [
        child
        for child in psutil.Process().children()
        if "worker" in child.cmdline() and "gpu" in child.cmdline()
    ]
    assert len(workers) == 1, workers
    return int(workers[0].pid)


def _redeliver_unacked() -> None:
    """What Redis' visibility timeout does after a while (hours by default): put the messages
    of dead consumers back on their queue."""
    options = {"visibility_timeout": 0, "unacked_restore_throttle": 1}
    with Connection(str(celery_app.conf.broker_url), transport_options=options) as connection:
        channel: Any = connection.default_channel
        channel.qos.restore_visible(num=100, interval=1)


def test_a_killed_worker_round_resumes_from_the_uploaded_state(
    project, admin_user, redis_broker: redis.Redis, tmp_path: Path
):
    deployed_parent(project)
    add_scenes(project, [1, 2, 3], max_masks=4)
    RoundSettings.objects.create(project=project, min_masks=4)
    training_round = round_launch(
        project=project,
        user=admin_user,
        overrides={"steps": STEPS, "masks_per_image": 2, "iterations": 3, "checkpoint_every": 2},
    )
    job = training_round.job
    store = get_blob_store()

    def state_uploaded() -> bool:
        return store.exists(state_key(training_round.pk))

    first_log = tmp_path / "worker-1.log"
    with celery_worker(queue="gpu", log=first_log, extra_env=ENV):
        wait_or_fail(state_uploaded, 240, "no training state was uploaded", first_log)
        psutil.Process(_worker_pid()).send_signal(signal.SIGKILL)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING, job.error
    assert job.attempts == 1
    # Another host: nothing local survives, only the blob store.
    shutil.rmtree(work_dir_for(training_round.pk))
    _redeliver_unacked()

    second_log = tmp_path / "worker-2.log"
    with celery_worker(queue="gpu", log=second_log, extra_env=ENV):

        def finished() -> bool:
            job.refresh_from_db()
            return job.is_finished

        wait_or_fail(finished, 300, "the resumed round did not finish", second_log)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.attempts == 2
    training_round = TrainingRound.objects.get(pk=training_round.pk)
    produced = training_round.produced_version
    assert produced is not None
    training = produced.metrics["training"]
    assert training["steps"] == STEPS
    assert 0 < training["resumed_from_step"] < STEPS
    assert training["resumed_from_step"] % 2 == 0  # a checkpoint_every boundary
    assert not store.exists(state_key(training_round.pk))
    assert produced.parent_id == training_round.parent_version_id
