"""Celery tasks of the annotation app: thin, ids in, one service call each."""

from typing import Any

from celery import Task, shared_task

from annotation.services.export import export_run
from annotation.services.image_removal import removed_images_purge
from annotation.services.project_deletion import deleted_project_purge
from engine.services.jobs import job_fail
from storage.blobs import BlobStoreUnavailable

# Every task here and in engine.tasks is idempotent, so acknowledged late (a worker that dies
# mid-task gets it redelivered); only an unreachable blob store is retried, with backoff.
BLOB_RETRY: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": (BlobStoreUnavailable,),
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
}


class JobTask(Task[Any, Any]):
    """A task whose first argument is a Job id: a final failure marks that job failed.

    Celery calls ``on_failure`` once the task gives up: at once for an ordinary error, after
    the last retry for a retried one; never between retries.
    """

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        if job_id is not None:
            job_fail(job_id=int(job_id), error=exc)


# export_run is idempotent: a redelivered job reruns cleanly or does nothing.
@shared_task(bind=True, base=JobTask, name="annotation.tasks.export_dataset", **BLOB_RETRY)
def export_dataset(self: JobTask, job_id: int) -> None:
    """Export one dataset (COCO or SA-1B) as described by its Job's params."""
    export_run(job_id=job_id, task_id=self.request.id or "")


# Idempotent: blobs deleted already are found gone.
@shared_task(bind=True, base=JobTask, name="annotation.tasks.purge_removed_images", **BLOB_RETRY)
def purge_removed_images(self: JobTask, job_id: int) -> None:
    """Delete the files (original bytes, embeddings) of the images a removal job took out."""
    removed_images_purge(job_id=job_id, task_id=self.request.id or "")


# Idempotent: what is gone is skipped.
@shared_task(bind=True, base=JobTask, name="annotation.tasks.purge_deleted_project", **BLOB_RETRY)
def purge_deleted_project(self: JobTask, job_id: int) -> None:
    """Delete the files of a deleted project (images, embeddings, models, exports)."""
    deleted_project_purge(job_id=job_id, task_id=self.request.id or "")
