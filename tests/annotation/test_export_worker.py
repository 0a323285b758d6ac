"""A real Celery worker process takes an export job from Redis and runs it to the end."""

import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from annotation.models import Project
from annotation.services.export import export_start
from config.celery import app as celery_app
from engine.models import Job
from storage.blobs import get_blob_store
from tests.annotation.test_export import SIZES, build_dataset
from tests.s3server import stop_process, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30
JOB_TIMEOUT_S = 60


def _wait(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    log: Path,
    process: "subprocess.Popen[bytes] | None" = None,
) -> None:
    try:
        if wait_until(predicate, timeout=timeout, interval=0.2, process=process):
            return
    except ChildProcessError as exc:
        raise AssertionError(f"{exc}; worker log:\n{log.read_text()[-4000:]}") from exc
    raise AssertionError(f"{what} within {timeout} s; worker log:\n{log.read_text()[-4000:]}")


@pytest.fixture
def worker(redis_broker: redis.Redis, tmp_path: Path) -> Iterator[Path]:
    """A ``celery worker -Q default --pool solo`` on the test database and blob folder; yields
    the path of its log."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": str(celery_app.conf.broker_url),
        "STORAGE_BACKEND": "local",
        "BLOB_ROOT": str(settings.BLOB_ROOT),
        "MASKLOOP_VAR_DIR": str(settings.VAR_DIR),
        "LOG_LEVEL": "INFO",
    }
    log = tmp_path / "worker.log"
    command = [
        str(REPO / ".venv" / "bin" / "celery"),
        "-A", "config", "worker", "-Q", "default", "--pool", "solo",
        "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        "-n", f"export-test-{uuid.uuid4().hex[:8]}@%h",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        _wait(
            lambda: " ready." in log.read_text(),
            READY_TIMEOUT_S,
            "the worker was not ready",
            log,
            process,
        )
        yield log
    finally:
        stop_process(process, timeout=20)


def test_a_real_worker_runs_a_queued_sa1b_export_to_the_end(worker):
    dataset = build_dataset(Project.objects.create(name="worker export"))
    job = export_start(project=dataset.project, fmt="sa1b", shard_size=10)

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    _wait(finished, JOB_TIMEOUT_S, "the export job did not finish", worker)
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
