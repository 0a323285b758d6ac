"""Housekeeping tasks of the training app, on the ``default`` queue (the name does not match
the ``training.tasks.*`` route to ``gpu``): the daily embedding GC of ``CELERY_BEAT_SCHEDULE``.
Registered with the worker by ``config/celery.py`` (``autodiscover_tasks`` of this module)."""

from celery import shared_task

from training.services.embedding_gc import embeddings_gc as embeddings_gc_run


@shared_task(name="training.housekeeping.embeddings_gc", acks_late=True)
def embeddings_gc() -> dict[str, dict[str, object]]:
    """Retire unused model versions of every project and delete their embeddings (idempotent,
    so a redelivered run is harmless); returns per project what it did."""
    outcomes = embeddings_gc_run()
    return {
        str(project_id): {
            "retired": outcome.retired,
            "blobs_deleted": outcome.blobs_deleted,
            "jobs_cancelled": outcome.jobs_cancelled,
        }
        for project_id, outcome in outcomes.items()
    }
