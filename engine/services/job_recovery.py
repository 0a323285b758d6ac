"""Jobs whose process died, queued again: what the folder broker cannot do by itself.

Redis and RabbitMQ deliver a task again when the worker that took it dies before finishing
(``acks_late``). ``make run``'s broker, kombu's filesystem transport, deletes a message as a
worker takes it, so a worker killed in the middle of a job (SIGKILL, the out-of-memory killer,
a second Ctrl+C) lost the job: its row stayed ``running`` for ever, with nothing behind it.

Every job records the process that runs it (``Job.runner``, ``host:pid``, set by ``job_start``
and each progress report); a queued job, the worker that took its message from the folder and
holds it until a pool process is free or its countdown ends (:func:`job_received`, at Celery's
``task_received``). The folder broker serves one machine, so its worker can tell a dead runner
from a live one: :func:`jobs_recover`, run by beat every minute and when a worker starts
(``engine.tasks.jobs_recover``), takes every ``queued`` or ``running`` job whose runner was a
process of this host that no longer exists, and that no message waiting in the folder will
carry on, and

- queues an export, a retrain round or an embedding job again: they are idempotent and resume
  where they stopped (a round from its last checkpoint, embeddings after the last stored one);
- fails an automatic or prefill run as interrupted and resumes it at once (its pending images,
  and the one the worker died on, go to new chunks);
- fails an image or COCO mask import (it ran in a ``manage.py`` process or a web request;
  running it again skips what it stored);
- fails a job that was recovered ``MAX_RECOVERIES`` times already (its process's fourth
  death): a job that kills its worker (out of memory) is not run for ever.

On other brokers it does nothing: they redeliver the task themselves, and a second copy would
run the job twice.
"""

import base64
import json
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction

from engine.models import Job
from engine.services.embeddings import BULK_PRIORITY
from engine.services.jobs import job_fail, process_identity

logger = logging.getLogger(__name__)

MAX_RECOVERIES = 3
# The task that runs each kind again from its job id: (task name, queue, priority or None).
REQUEUED: dict[str, tuple[str, str, int | None]] = {
    Job.Kind.EXPORT: ("annotation.tasks.export_dataset", "default", None),
    Job.Kind.REMOVE_IMAGES: ("annotation.tasks.purge_removed_images", "default", None),
    Job.Kind.DELETE_PROJECT: ("annotation.tasks.purge_deleted_project", "default", None),
    Job.Kind.TRAIN: ("training.tasks.gpu_train_round", "gpu", None),
    Job.Kind.EMBED: ("engine.tasks.gpu_precompute_embeddings", "gpu", BULK_PRIORITY),
}
RESUMED = (Job.Kind.AUTOMATIC, Job.Kind.PREFILL)
# Imports run in the process that started them (a command, a web request): failed with what to
# do, which is safe because a rerun skips what the dead one stored.
RUN_AGAIN: dict[str, str] = {
    Job.Kind.INGEST: "stored files are skipped",
    Job.Kind.IMPORT_MASKS: "masks imported already are skipped",
}
# Tasks whose first argument is a job id: a message of one of them still waiting in the broker
# folder will carry its job on (the next chunk of an embedding job or an automatic run).
JOB_TASKS = frozenset(
    {name for name, _, _ in REQUEUED.values()} | {"engine.tasks.gpu_automatic_chunk"}
)


def folder_broker() -> bool:
    """Is the Celery broker kombu's filesystem transport (``make run``'s)?"""
    return str(settings.CELERY_BROKER_URL).startswith("filesystem://")


def runner_gone(runner: str) -> bool:
    """Was ``runner`` (``host:pid``) a process of this host that has ended? False when it is
    alive, on another host, this process, or not recorded."""
    host, _, pid = runner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, run by another user
        return False
    return False


def job_received(job_id: int) -> bool:
    """A worker (this process) took the message of job ``job_id`` from the folder: record it
    as the job's runner while the job is still queued, so that the job is recovered if this
    worker dies before starting it. True when recorded; nothing on other brokers."""
    if not folder_broker():
        return False
    taken = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED)
    return taken.update(runner=process_identity()) == 1


def jobs_recover() -> list[int]:
    """Recover every queued or running job whose process died (see the module docstring);
    the ids."""
    if not folder_broker():
        return []
    active = (Job.Status.QUEUED, Job.Status.RUNNING)
    candidates = Job.objects.filter(status__in=active).exclude(runner="")
    dead = [
        job_id for job_id, runner in candidates.values_list("pk", "runner") if runner_gone(runner)
    ]
    if not dead:
        return []
    waiting = queued_job_ids()  # a job with a message in the folder goes on by itself
    return [job_id for job_id in dead if job_id not in waiting and _recover(job_id)]


def queued_job_ids() -> set[int]:
    """Ids of the jobs that a message waiting in the broker folder will run (JOB_TASKS).

    A message file is JSON (kombu's transport format) whose ``body`` is the task's
    ``[args, kwargs, embed]``, base64-encoded; files taken by a worker meanwhile, or that are
    not one of these tasks, are skipped."""
    folder = Path(str(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in", "")))
    found: set[int] = set()
    for path in folder.glob("*.msg") if folder.is_dir() else ():
        try:
            message = json.loads(path.read_bytes())
            if (message.get("headers") or {}).get("task") not in JOB_TASKS:
                continue
            body = message["body"]
            if (message.get("properties") or {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            found.add(int(json.loads(body)[0][0]))
        except (OSError, ValueError, LookupError, TypeError, AttributeError):
            continue
    return found


@transaction.atomic
def _recover(job_id: int) -> bool:
    job = Job.objects.select_for_update().get(pk=job_id)
    if job.is_finished or not runner_gone(job.runner):
        return False  # finished, cancelled, started or recovered meanwhile
    holder = "running it" if job.status == Job.Status.RUNNING else "holding its message"
    why = f"the process {holder} ({job.runner}) stopped"
    logger.warning("%s job %s: %s", job.kind, job.pk, why)
    if job.kind in RUN_AGAIN:
        job_fail(job_id=job.pk, error=f"{why}: run the import again ({RUN_AGAIN[job.kind]})")
        return True
    if job.recoveries >= MAX_RECOVERIES:
        job_fail(
            job_id=job.pk,
            error=f"{why}, {job.recoveries + 1} times (killed, or out of memory?): not run again",
        )
        return True
    Job.objects.filter(pk=job.pk).update(recoveries=job.recoveries + 1, runner="")
    if job.kind in RESUMED:
        from engine.services.automatic.lifecycle import (
            RETRIABLE_PREFIX,
            AutomaticRefused,
            automatic_resume,
        )

        job_fail(job_id=job.pk, error=f"{RETRIABLE_PREFIX}{why}")
        try:
            automatic_resume(job_id=job.pk)
        except AutomaticRefused as exc:  # nothing left to do: it stays failed, with the reason
            logger.info("run %s not resumed: %s", job.pk, exc)
        return True
    if job.kind not in REQUEUED:
        job_fail(job_id=job.pk, error=why)
        return True
    name, queue, priority = REQUEUED[job.kind]
    task_id = job.celery_task_id or str(uuid.uuid4())
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.QUEUED, celery_task_id=task_id, message=f"{why}: queued again"[:500]
    )
    options: dict[str, Any] = {} if priority is None else {"priority": priority}
    transaction.on_commit(
        lambda: current_app.send_task(name, args=[job.pk], task_id=task_id, queue=queue, **options),
        robust=False,
    )
    return True
