"""Removing images from a project: their rows and masks at once, their bytes in the background.

:func:`images_remove` deletes, in one transaction, the images' rows with everything that hangs
off them (masks of every status, leases, automatic-run rows) and takes them out of the
project's frozen validation split (the training app's receiver of the ``images_removed``
signal); it creates a ``remove_images`` Job that records what went and queues
:func:`removed_images_purge` to delete their blobs:

* ``embeddings/<version>/<sha256>.npz`` of every model version of the project;
* ``images/<sha256>``, the original bytes, unless another image (of any project) still has the
  same bytes: the key is content-addressed and shared.

Refused (409, nothing changed) while a job of the project that reads its images or masks is
queued or running: a retrain round, an automatic or prefill run, an export, a COCO import.
Rounds and runs start under the project's row lock, which this takes too.

The purge and an import of the same bytes into another project can run at once. Neither
holds a lock on a blob, so each side checks after the other: the purge deletes an image blob
only when no row has its sha256, keeps its bytes while it deletes, and puts them back if a row
appeared meanwhile; an import that committed rows while a removal was pending or had just
finished checks that their blobs still exist and stores the missing ones again
(:func:`image_blobs_restore`).
"""

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from annotation.errors import ConflictError, DomainError
from annotation.models import Image, ImageLease, Mask, Project
from annotation.services.image_sets import (
    id_chunks,
    image_ids_checked,
    project_images_or_404,
)
from annotation.signals import images_removed
from engine.models import AutomaticImage, Job, ModelVersion
from engine.services.embeddings import embedding_key
from engine.services.jobs import (
    job_create,
    job_enqueue,
    job_kind_active_since,
    job_progress,
    job_start,
    job_succeed,
)
from storage.blobs import BlobNotFound, get_blob_store

logger = logging.getLogger(__name__)

_PROGRESS_SECONDS = 1.0
# Jobs that read a project's images or masks while they run: no removal meanwhile.
_BLOCKING = (
    Job.Kind.TRAIN,
    Job.Kind.AUTOMATIC,
    Job.Kind.PREFILL,
    Job.Kind.EXPORT,
    Job.Kind.IMPORT_MASKS,
)
# Jobs that delete image blobs (image_blobs_restore looks for them).
DELETING = (Job.Kind.REMOVE_IMAGES, Job.Kind.DELETE_PROJECT)


class RemovalRefused(DomainError):
    code = "removal_refused"


@dataclass(frozen=True)
class ImagesRemoved:
    job: Job
    images: int
    masks: int


@transaction.atomic
def images_remove(
    *, project: Project, image_ids: object, user: User | None = None, enqueue: bool = True
) -> ImagesRemoved:
    """Remove ``image_ids`` of ``project`` (the caller checks the admin role).

    Raises RemovalRefused (400) for a malformed list, ImagesNotFound (404) naming ids that are
    not images of the project, ConflictError (409) while a blocking job runs; nothing is
    changed then. The blobs are deleted by the returned job, queued after commit (or, with
    ``enqueue=False``, run by the caller: :func:`removed_images_purge`)."""
    ids = image_ids_checked(image_ids, refused=RemovalRefused)
    locked = Project.objects.select_for_update().get(pk=project.pk)
    busy = (
        Job.objects.filter(
            project=locked, kind__in=_BLOCKING, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]
        )
        .order_by("id")
        .first()
    )
    if busy is not None:
        raise ConflictError(
            f"{busy.get_kind_display().lower()} job #{busy.pk} of project {locked.name!r} is "
            f"{busy.status} and reads its images: wait for it to finish or cancel it"
        )
    found = project_images_or_404(
        Image.objects.filter(project=locked).only("pk", "sha256"),
        project=locked,
        ids=ids,
        action="removed",
    )
    shas = {image_id: image.sha256 for image_id, image in found.items()}
    masks = 0
    for chunk in id_chunks(ids):
        masks += Mask.objects.filter(image_id__in=chunk).delete()[1].get(Mask._meta.label, 0)
        ImageLease.objects.filter(image_id__in=chunk).delete()
        AutomaticImage.objects.filter(image_id__in=chunk).delete()
        Image.objects.filter(pk__in=chunk).delete()
    split_removed = sum(
        int(answer or 0)
        for _, answer in images_removed.send(sender=Image, project=locked, image_ids=set(ids))
    )
    job = job_create(
        kind=Job.Kind.REMOVE_IMAGES,
        project=locked,
        params={"image_ids": ids, "sha256": sorted(set(shas.values()))},
        created_by=user,
        total=len(set(shas.values())),
        message=f"{len(ids)} images and {masks} masks removed; deleting their files",
    )
    job.result = {"images": len(ids), "masks": masks, "validation_images_removed": split_removed}
    Job.objects.filter(pk=job.pk).update(result=job.result)
    if enqueue:
        from annotation.tasks import purge_removed_images  # the task module imports this one

        job_enqueue(job=job, task=purge_removed_images)
    return ImagesRemoved(job=job, images=len(ids), masks=masks)


# --- the purge (a task on the default queue) ---------------------------------------------------


def _referenced(sha256: str) -> bool:
    return Image.objects.filter(sha256=sha256).exists()


def purge_image_blob(sha256: str, key: str) -> str:
    """Delete ``images/<sha256>`` unless an image row has those bytes; "deleted", "kept",
    "gone" (deleted before) or "restored" (imported again while it was deleted)."""
    if _referenced(sha256):
        return "kept"
    store = get_blob_store()
    try:
        data = store.get_bytes(key)
    except BlobNotFound:
        return "gone"
    store.delete(key)
    if _referenced(sha256):  # an import committed a row in between: it needs these bytes
        store.put_bytes(key, data)
        logger.warning("image blob %s was imported again while being removed; restored", key)
        return "restored"
    return "deleted"


class PurgeProgress:
    """A purge's progress: ``progress(done, total)`` after every step (the commands' bars),
    the job row at most every ``_PROGRESS_SECONDS``."""

    def __init__(
        self, *, job_id: int, total: int, progress: Callable[[int, int], None] | None
    ) -> None:
        self.job_id, self.total, self.progress = job_id, total, progress
        self.done = 0
        self.reported = time.monotonic()

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)
        if time.monotonic() - self.reported >= _PROGRESS_SECONDS:
            job_progress(job_id=self.job_id, done=self.done, total=self.total)
            self.reported = time.monotonic()


def blob_delete_counted(key: str) -> int:
    """Delete ``key``: 1 if it was there, 0 if not (for the purges' counts)."""
    store = get_blob_store()
    if not store.exists(key):
        return 0
    store.delete(key)
    return 1


def removed_images_purge(
    *, job_id: int, task_id: str = "", progress: Callable[[int, int], None] | None = None
) -> dict[str, Any] | None:
    """Delete the blobs of a ``remove_images`` job's images. Idempotent: a rerun finds deleted
    blobs gone and does the rest; returns the job's result, or None when it had finished.
    ``progress(done, total)`` runs after each image's files."""
    from annotation.services.ingest import image_blob_key  # ingest imports this module

    job = job_start(job_id=job_id, task_id=task_id)
    if job is None:
        return None
    project_id = int(job.project_id or 0)  # removal jobs always have a project
    shas = [str(sha) for sha in job.params.get("sha256") or []]
    versions = list(ModelVersion.objects.filter(project_id=project_id).values_list("pk", flat=True))
    counts = {"deleted": 0, "kept": 0, "gone": 0, "restored": 0, "embeddings_deleted": 0}
    ticker = PurgeProgress(job_id=job_id, total=len(shas), progress=progress)
    for sha in shas:
        # Embeddings are per project version: kept when the bytes came back into this project.
        if not Image.objects.filter(project_id=project_id, sha256=sha).exists():
            counts["embeddings_deleted"] += sum(
                blob_delete_counted(embedding_key(model_version_id=version, image_sha256=sha))
                for version in versions
            )
        counts[purge_image_blob(sha, image_blob_key(sha))] += 1
        ticker.step()
    result = {**(job.result or {}), "blobs": counts}
    job_succeed(
        job_id=job_id,
        result=result,
        message=f"{result.get('images', len(shas))} images and {result.get('masks', 0)} masks "
        f"removed; {counts['deleted']} image files and {counts['embeddings_deleted']} "
        f"embeddings deleted, {counts['kept']} files kept (other projects have them)",
    )
    return result


# --- imports that ran beside a removal ----------------------------------------------------------


def image_blobs_restore(
    *, keys: Mapping[str, Callable[[], bytes | None]], since: dt.datetime
) -> list[str]:
    """After an import committed rows for ``keys`` (blob key -> its bytes, read on demand):
    when a removal overlapped the import (since ``since``), put back every blob a purge
    deleted under it. Returns the keys restored (almost always none)."""
    if not keys or not job_kind_active_since(kinds=DELETING, since=since):
        return []
    store = get_blob_store()
    restored = []
    for key, read in keys.items():
        if store.exists(key):
            continue
        data = read()
        if data is None:
            logger.error(
                "image blob %s was removed during its import and cannot be read again", key
            )
            continue
        store.put_bytes(key, data)
        restored.append(key)
        logger.warning("image blob %s was removed during its import; stored again", key)
    return restored
