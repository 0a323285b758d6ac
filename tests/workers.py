"""Real Celery worker processes for the few tests that are about workers.

The worker runs against the pytest test database, the test's blob folder and the Redis broker
of the test settings, so a job queued by the test is taken from Redis by another process.
"""

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

from config.celery import app as celery_app
from tests.s3server import stop_process, wait_until

REPO = Path(__file__).resolve().parents[1]


def wait_or_fail(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    log: Path,
    process: "subprocess.Popen[bytes] | None" = None,
) -> None:
    """Wait for ``predicate``; fail the test with the worker's log tail when it does not hold."""
    try:
        if wait_until(predicate, timeout=timeout, interval=0.2, process=process):
            return
    except ChildProcessError as exc:
        raise AssertionError(f"{exc}; worker log:\n{log.read_text()[-4000:]}") from exc
    raise AssertionError(f"{what} within {timeout} s; worker log:\n{log.read_text()[-4000:]}")


@contextmanager
def celery_worker(
    *, queue: str, log: Path, ready_timeout: float = 60, extra_env: dict[str, str] | None = None
) -> Iterator[Path]:
    """``celery worker -Q <queue> --pool solo`` until the block ends; yields its log path."""
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
        **(extra_env or {}),
    }
    command = [
        str(REPO / ".venv" / "bin" / "celery"),
        "-A", "config", "worker", "-Q", queue, "--pool", "solo",
        "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        "-n", f"{queue}-test-{uuid.uuid4().hex[:8]}@%h",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_or_fail(
            lambda: " ready." in log.read_text(),
            ready_timeout,
            "the worker was not ready",
            log,
            process,
        )
        yield log
    finally:
        stop_process(process, timeout=20)
