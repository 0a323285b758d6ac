"""Deleting a whole project: its rows at once, its files in the background.

:func:`project_delete` (the caller checks the admin role) deletes, in one transaction, the
project with everything in it: images, masks, leases, model versions, deployments, jobs,
members, and (through the ``project_deleting`` signal) the training app's rounds, validation
split, round settings and cron schedule. It creates a ``delete_project`` Job, which has no
project (it outlives it: superusers see it), and queues :func:`deleted_project_purge` to delete:

* the original bytes of its images, unless another project has the same bytes (as image
  removal does, annotation.services.image_removal);
* every embedding of its model versions (``embeddings/<version>/``);
* its checkpoints and ONNX decoders, unless a version of another project has the same file;
* the files of its exports (``exports/<job>/``) and the state files of its rounds.

Refused while any job of the project is queued or running (409), and unless the request names
the project exactly (400). Exports written outside the blob store (``--out``) are not touched.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from annotation.errors import ConflictError, DomainError
from annotation.models import Image, ImageLease, Mask, Project
from annotation.services.image_removal import (
    PurgeProgress,
    blob_delete_counted,
    purge_image_blob,
)
from annotation.signals import project_deleting
from engine.models import AutomaticImage, Job, ModelVersion
from engine.services.jobs import job_create, job_enqueue, job_start, job_succeed
from engine.services.registry import checkpoint_key, onnx_decoder_key, onnx_variant_key
from storage.blobs import get_blob_store

logger = logging.getLogger(__name__)


class DeletionRefused(DomainError):
    code = "deletion_refused"


@dataclass(frozen=True)
class ProjectDeleted:
    job: Job
    name: str
    images: int
    masks: int
    versions: int


@transaction.atomic
def project_delete(
    *, project: Project, confirm: object, user: User | None = None, enqueue: bool = True
) -> ProjectDeleted:
    """Delete ``project``; ``confirm`` must be its exact name. Raises DeletionRefused (400) or
    ConflictError (409, a job of the project is queued or running), deleting nothing."""
    locked = Project.objects.select_for_update().get(pk=project.pk)
    if confirm != locked.name:
        raise DeletionRefused(
            f"to delete project {locked.name!r}, confirm with its exact name (got {confirm!r})"
        )
    busy = (
        Job.objects.filter(project=locked, status__in=[Job.Status.QUEUED, Job.Status.RUNNING])
        .order_by("id")
        .first()
    )
    if busy is not None:
        raise ConflictError(
            f"{busy.get_kind_display().lower()} job #{busy.pk} of project {locked.name!r} is "
            f"{busy.status}: wait for it to finish or cancel it"
        )
    shas = sorted(set(Image.objects.filter(project=locked).values_list("sha256", flat=True)))
    versions = list(
        ModelVersion.objects.filter(project=locked).values("pk", "sha256", "onnx_decoder_key")
    )
    exports = list(
        Job.objects.filter(project=locked, kind=Job.Kind.EXPORT).values_list("pk", flat=True)
    )
    keys: list[str] = []
    for _, answer in project_deleting.send(sender=Project, project=locked):
        keys += [str(key) for key in answer or []]
    images = Image.objects.filter(project=locked).count()
    masks = Mask.objects.filter(project=locked).delete()[1].get(Mask._meta.label, 0)
    ImageLease.objects.filter(image__project=locked).delete()
    AutomaticImage.objects.filter(job__project=locked).delete()
    Image.objects.filter(project=locked).delete()
    Project.objects.filter(pk=locked.pk).update(deployed_version=None)
    Project.objects.filter(pk=locked.pk).delete()
    job = job_create(
        kind=Job.Kind.DELETE_PROJECT,
        params={
            "project": {"id": locked.pk, "name": locked.name},
            "sha256": shas,
            "versions": [
                {"id": v["pk"], "sha256": v["sha256"], "onnx": v["onnx_decoder_key"]}
                for v in versions
            ],
            "prefixes": [f"exports/{job_id}/" for job_id in exports],
            "keys": keys,
        },
        created_by=user,
        total=len(shas) + len(versions) + len(exports) + len(keys),
        message=f"project {locked.name!r} deleted ({images} images, {masks} masks, "
        f"{len(versions)} model versions); deleting its files",
    )
    job.result = {"images": images, "masks": masks, "versions": len(versions)}
    Job.objects.filter(pk=job.pk).update(result=job.result)
    if enqueue:
        from annotation.tasks import purge_deleted_project  # the task module imports this one

        job_enqueue(job=job, task=purge_deleted_project)
    return ProjectDeleted(
        job=job, name=locked.name, images=images, masks=masks, versions=len(versions)
    )


def _delete_listed(prefix: str) -> int:
    store = get_blob_store()
    keys = list(store.list(prefix))
    for key in keys:
        store.delete(key)
    return len(keys)


def _purge_version(version: dict[str, Any]) -> tuple[int, int]:
    """(embeddings deleted, model files deleted) of one deleted version."""
    embeddings = _delete_listed(f"embeddings/{int(version['id'])}/")
    sha = str(version["sha256"])
    if ModelVersion.objects.filter(sha256=sha).exists():
        return embeddings, 0  # another project imported the same checkpoint
    onnx = str(version.get("onnx") or onnx_decoder_key(sha))
    files = [checkpoint_key(sha), onnx, onnx_variant_key(onnx, "low_res")]
    deleted = sum(blob_delete_counted(key) for key in files)
    if ModelVersion.objects.filter(sha256=sha).exists():
        # Imported elsewhere between the check and the delete: the import sees it and stores
        # its files again (engine.services.registry), unless it checked before the delete.
        logger.error("checkpoint %s was imported again while its files were being deleted", sha)
    return embeddings, deleted


def deleted_project_purge(
    *, job_id: int, task_id: str = "", progress: Callable[[int, int], None] | None = None
) -> dict[str, Any] | None:
    """Delete the files of a ``delete_project`` job's project. Idempotent (what is gone is
    skipped); returns the job's result, or None when it had finished."""
    from annotation.services.ingest import image_blob_key  # ingest imports image_removal

    job = job_start(job_id=job_id, task_id=task_id)
    if job is None:
        return None
    params = job.params or {}
    counts = {
        "deleted": 0, "kept": 0, "gone": 0, "restored": 0,
        "embeddings_deleted": 0, "model_files_deleted": 0, "other_files_deleted": 0,
    }  # fmt: skip
    shas = [str(sha) for sha in params.get("sha256") or []]
    versions = list(params.get("versions") or [])
    prefixes = [str(prefix) for prefix in params.get("prefixes") or []]
    keys = [str(key) for key in params.get("keys") or []]
    total = len(shas) + len(versions) + len(prefixes) + len(keys)
    ticker = PurgeProgress(job_id=job_id, total=total, progress=progress)
    for sha in shas:
        counts[purge_image_blob(sha, image_blob_key(sha))] += 1
        ticker.step()
    for version in versions:
        embeddings, files = _purge_version(version)
        counts["embeddings_deleted"] += embeddings
        counts["model_files_deleted"] += files
        ticker.step()
    for prefix in prefixes:
        counts["other_files_deleted"] += _delete_listed(prefix)
        ticker.step()
    for key in keys:
        counts["other_files_deleted"] += blob_delete_counted(key)
        ticker.step()
    result = {**(job.result or {}), "blobs": counts}
    job_succeed(
        job_id=job_id,
        result=result,
        message=f"project {params.get('project', {}).get('name')!r} deleted; "
        f"{counts['deleted']} image files, {counts['embeddings_deleted']} embeddings and "
        f"{counts['model_files_deleted']} model files deleted, {counts['kept']} image files "
        "kept (other projects have them)",
    )
    return result
