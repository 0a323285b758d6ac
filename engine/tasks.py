"""Celery tasks of the engine: thin, ids in, one service call each.

Every task here but ``jobs_recover`` is named ``engine.tasks.gpu_*``, so routed to the ``gpu``
queue (settings). All are idempotent (a stored embedding is skipped, a finished job does
nothing), so they are acknowledged late: a worker that dies mid-task gets the message
redelivered (on the folder broker, ``jobs_recover`` queues its job again). Only an unreachable
blob store is retried, with backoff.
"""

import logging
from typing import Any

from celery import shared_task
from celery.signals import task_received, worker_ready
from django.db import close_old_connections

from annotation.tasks import BLOB_RETRY, JobTask
from engine.services.automatic import automatic_chunk_run
from engine.services.embeddings import embedding_compute, embeddings_precompute_run
from engine.services.job_recovery import JOB_TASKS, folder_broker, job_received
from engine.services.job_recovery import jobs_recover as jobs_recover_run

logger = logging.getLogger(__name__)


@shared_task(name="engine.tasks.gpu_compute_embedding", **BLOB_RETRY)
def gpu_compute_embedding(image_id: int, model_version_id: int) -> None:
    """Store one image's embedding for one model version (skipped when stored already)."""
    embedding_compute(image_id=image_id, model_version_id=model_version_id)


@shared_task(bind=True, base=JobTask, name="engine.tasks.gpu_precompute_embeddings", **BLOB_RETRY)
def gpu_precompute_embeddings(self: JobTask, job_id: int) -> None:
    """One chunk of an ``embed`` job; the service queues the next chunk until all are done."""
    embeddings_precompute_run(job_id=job_id, task_id=self.request.id or "")


@shared_task(bind=True, base=JobTask, name="engine.tasks.gpu_automatic_chunk", **BLOB_RETRY)
def gpu_automatic_chunk(self: JobTask, job_id: int, image_ids: list[int]) -> None:
    """A few images of an automatic or prefill run; the service queues the next chunk. Images
    done already are skipped, so a redelivered chunk redoes only what was not committed."""
    automatic_chunk_run(job_id=job_id, image_ids=list(image_ids), task_id=self.request.id or "")


@shared_task(name="engine.tasks.jobs_recover")
def jobs_recover() -> list[int]:
    """Queue again the jobs whose process died (the folder broker only; see the service)."""
    return jobs_recover_run()


@worker_ready.connect(dispatch_uid="maskloop-jobs-recover-at-start")
def _recover_at_start(**_: Any) -> None:
    """A worker started on the folder broker (a restart after a crash) recovers at once
    instead of at beat's next minute."""
    if folder_broker():
        jobs_recover.apply_async(queue="default")


@task_received.connect(dispatch_uid="maskloop-job-message-received")
def _job_message_received(request: Any = None, **_: Any) -> None:
    """The worker took a job's message from the folder broker (it may hold it a while: a
    countdown, a busy pool): the job now names this worker, so that its death loses nothing."""
    if request is None or request.name not in JOB_TASKS or not folder_broker():
        return
    try:
        close_old_connections()  # this runs in the worker's main process, outside any task
        job_received(int(request.args[0]))
    except Exception:  # never break the worker's consumer; a started job names its runner anyway
        logger.exception("could not record the worker holding task %s", request.id)
