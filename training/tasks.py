"""Celery tasks of retrain rounds: thin, ids in, one service call each.

``gpu_train_round`` matches the ``training.tasks.*`` route to the ``gpu`` queue. It is
acknowledged late (and rejected when its worker is lost, a setting): a worker killed mid-round
gets the message redelivered, and the rerun resumes from the last uploaded training state; a
finished round's job makes a rerun do nothing. Transient errors (blob store or database
unreachable) are retried with backoff; after the last retry the job is failed. The scheduling
tasks are cheap database work: their names (``training.schedule.*``) keep them off the ``gpu``
route, on the ``default`` queue.
"""

from typing import Any

from celery import Task, shared_task

from training.services.round_run import RETRYABLE, round_fail, round_run
from training.services.schedule import round_launch_scheduled
from training.services.schedule import rounds_due as rounds_due_run

MAX_RETRIES = 5


@shared_task(
    bind=True,
    name="training.tasks.gpu_train_round",
    acks_late=True,
    max_retries=MAX_RETRIES,
)
def gpu_train_round(self: Task[Any, Any], job_id: int) -> None:
    """Run or resume the round of ``job_id``."""
    try:
        round_run(job_id=job_id, task_id=self.request.id or "")
    except RETRYABLE as exc:
        if self.request.retries >= MAX_RETRIES:
            round_fail(job_id=job_id, error=exc)
            return
        raise self.retry(exc=exc, countdown=min(300, 5 * 2**self.request.retries)) from exc


@shared_task(name="training.schedule.rounds_due", acks_late=True)
def rounds_due() -> list[int]:
    """Launch the rounds every-N-masks schedules call for (beat, every minute)."""
    return rounds_due_run()


@shared_task(name="training.schedule.scheduled_round", acks_late=True)
def scheduled_round(project_id: int) -> int | None:
    """A project's cron round (a PeriodicTask row written by its round settings)."""
    started = round_launch_scheduled(project_id=project_id, trigger="cron")
    return None if started is None else started.pk
