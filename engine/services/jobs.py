"""Job lifecycle: create → queue (after commit) → start → progress… → succeed | fail | cancel.

Tasks call these with a job id. ``job_start`` returns None for a job that already finished, so
a redelivered task (worker died after finishing, ``acks_late``) does nothing the second time.
"""

import datetime as dt
import logging
import os
import socket
import traceback
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from engine.models import Job

logger = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a running job when an admin cancelled it; the task stops cleanly."""


class _Task(Protocol):
    def apply_async(self, *args: Any, **kwargs: Any) -> Any: ...


@transaction.atomic
def job_create(
    *,
    kind: str,
    project: Any = None,
    params: dict[str, Any] | None = None,
    created_by: User | None = None,
    total: int | None = None,
    message: str = "",
) -> Job:
    if kind not in Job.Kind.values:
        raise ValueError(f"unknown job kind {kind!r}")
    return Job.objects.create(
        kind=kind,
        project=project,
        params=params or {},
        created_by=created_by if created_by is not None and created_by.pk else None,
        progress_total=total,
        message=message,
    )


def job_enqueue(*, job: Job, task: _Task, queue: str = "default") -> None:
    """Queue ``task(job.id)`` once the surrounding transaction commits (never before)."""
    task_id = str(uuid.uuid4())
    Job.objects.filter(pk=job.pk).update(celery_task_id=task_id)
    job.celery_task_id = task_id
    transaction.on_commit(
        lambda: task.apply_async(args=[job.pk], task_id=task_id, queue=queue), robust=False
    )


# Clocks of web and worker machines may differ by this much (job_kind_active_since).
CLOCK_MARGIN = dt.timedelta(seconds=60)


def job_kind_active_since(*, kinds: Sequence[str], since: dt.datetime) -> bool:
    """Was a job of one of ``kinds`` queued or running at any time after ``since``? (Used by
    imports to know whether a deletion may have removed a blob they rely on.)"""
    return Job.objects.filter(
        Q(finished_at__isnull=True) | Q(finished_at__gte=since - CLOCK_MARGIN), kind__in=kinds
    ).exists()


def process_identity() -> str:
    """``host:pid`` of this process, recorded on the jobs it starts."""
    return f"{socket.gethostname()}:{os.getpid()}"


@transaction.atomic
def job_start(*, job_id: int, task_id: str = "") -> Job | None:
    """Mark the job running; None when it is finished already (the caller then does nothing)."""
    job = Job.objects.select_for_update().get(pk=job_id)
    if job.is_finished:
        logger.info("job %s is %s already; nothing to do", job_id, job.status)
        return None
    now = timezone.now()
    job.status = Job.Status.RUNNING
    job.attempts += 1
    job.started_at = job.started_at or now
    job.heartbeat_at = now
    job.error = ""
    job.runner = process_identity()
    if task_id:
        job.celery_task_id = task_id
    job.save()
    return job


def job_progress(*, job_id: int, done: int, total: int | None = None, message: str = "") -> None:
    """Record progress (and a heartbeat, and this process as its runner). Raises
    :class:`JobCancelled` if it was cancelled."""
    # The runner too: a job's later chunks may run in another process than its first.
    updates: dict[str, Any] = {
        "progress_done": done,
        "heartbeat_at": timezone.now(),
        "runner": process_identity(),
    }
    if total is not None:
        updates["progress_total"] = total
    if message:
        updates["message"] = message[:500]
    Job.objects.filter(pk=job_id).update(**updates)
    if Job.objects.filter(pk=job_id, status=Job.Status.CANCELLED).exists():
        raise JobCancelled(f"job {job_id} was cancelled")


@transaction.atomic
def job_succeed(*, job_id: int, result: dict[str, Any], message: str = "") -> None:
    job = Job.objects.select_for_update().get(pk=job_id)
    job.status = Job.Status.SUCCEEDED
    job.result = result
    job.finished_at = timezone.now()
    if job.progress_total is not None:
        job.progress_done = job.progress_total
    if message:
        job.message = message[:500]
    job.save()


@transaction.atomic
def job_fail(*, job_id: int, error: BaseException | str) -> None:
    job = Job.objects.select_for_update().get(pk=job_id)
    if job.status == Job.Status.CANCELLED:
        return
    if isinstance(error, BaseException):
        summary = f"{type(error).__name__}: {error}"
        detail = "".join(traceback.format_exception(error))
        logger.error("job %s failed: %s\n%s", job_id, summary, detail)
    else:
        summary = error
    job.status = Job.Status.FAILED
    job.error = summary
    job.message = summary[:500]
    job.finished_at = timezone.now()
    job.save()


@transaction.atomic
def job_cancel(*, job_id: int) -> Job:
    """Cancel a queued or running job; the running task stops at its next progress report."""
    job = Job.objects.select_for_update().get(pk=job_id)
    if not job.is_finished:
        job.status = Job.Status.CANCELLED
        job.finished_at = timezone.now()
        job.message = "cancelled"
        job.save()
    return job
