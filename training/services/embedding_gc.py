"""Embedding garbage collection: retire model versions nobody serves, delete their embeddings.

A project keeps, ready to serve:

- the deployed version,
- the rollback target (the version the deployed one replaced: ``rollback_target``),
- the newest ``MASKLOOP_KEEP_VERSIONS`` versions (default 3), so a fresh round's child can
  still be compared and promoted,
- the parent of every round still queued or running (it is being trained from),
- the version pinned by every automatic or prefill run still queued or running (its masks
  are made with it, from its stored embeddings, to the run's end).

Every other ready version becomes ``retired``. Retired versions' embeddings
(``embeddings/<version id>/...`` blobs; no table tracks them) are deleted, and their unfinished
``embed`` jobs are cancelled so that no worker writes new ones. Deciding happens with the
project row locked (as promotions do), so a version cannot be promoted while it is being
retired, and ``model_version_deploy`` refuses retired versions afterwards. The blobs are
deleted outside the transaction, for every retired version of the project each run: a run that
died half-way, or a chunk that was still writing, is cleaned by the next. Checkpoints and ONNX
decoders are kept (they are the lineage and small); a retired version can be looked at, not
served.
"""

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from annotation.models import Project
from engine.models import Job, ModelVersion
from engine.services.embeddings import embedding_key
from engine.services.jobs import job_cancel
from storage.blobs import get_blob_store
from training.services.promotion import rollback_target

logger = logging.getLogger(__name__)


@dataclass
class GcOutcome:
    retired: list[int] = field(default_factory=list)  # versions retired by this run
    kept: list[int] = field(default_factory=list)  # ready versions kept
    blobs_deleted: int = 0
    jobs_cancelled: list[int] = field(default_factory=list)


def embedding_prefix(*, model_version_id: int) -> str:
    """The blob key prefix of every embedding of one version (see ``embedding_key``)."""
    return embedding_key(model_version_id=model_version_id, image_sha256="").removesuffix(".npz")


def versions_to_keep(*, project: Project, keep_newest: int) -> set[int]:
    """Ids of the project's versions that must stay ready (see the module docstring)."""
    keep = set(
        ModelVersion.objects.filter(project=project)
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)[:keep_newest]
    )
    if project.deployed_version_id is not None:
        keep.add(project.deployed_version_id)
    target = rollback_target(project=project)
    if target is not None:
        keep.add(target.pk)
    from training.models import TrainingRound  # the rounds app; optional for this module

    training = TrainingRound.objects.filter(
        project=project, job__status__in=[Job.Status.QUEUED, Job.Status.RUNNING]
    ).values_list("parent_version_id", flat=True)
    keep.update(training)
    # Automatic and prefill runs keep the version they pinned at start, to their end.
    runs = Job.objects.filter(
        project=project,
        kind__in=[Job.Kind.AUTOMATIC, Job.Kind.PREFILL],
        status__in=[Job.Status.QUEUED, Job.Status.RUNNING],
    ).values_list("params", flat=True)
    keep.update(int(p["model_version_id"]) for p in runs if p.get("model_version_id") is not None)
    return keep


def project_embeddings_gc(*, project: Project, keep_newest: int | None = None) -> GcOutcome:
    """Retire the project's versions that are not kept and delete retired versions'
    embeddings. Idempotent: a second run retires nothing and deletes nothing more."""
    keep_newest = int(settings.MASKLOOP_KEEP_VERSIONS if keep_newest is None else keep_newest)
    if keep_newest < 1:
        raise ValueError(f"keep_newest must be at least 1, got {keep_newest}")
    outcome = GcOutcome()
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        keep = versions_to_keep(project=locked, keep_newest=keep_newest)
        ready = ModelVersion.objects.filter(project=locked, status=ModelVersion.Status.READY)
        outcome.retired = sorted(ready.exclude(pk__in=keep).values_list("id", flat=True))
        outcome.kept = sorted(ready.filter(pk__in=keep).values_list("id", flat=True))
        ModelVersion.objects.filter(pk__in=outcome.retired).update(
            status=ModelVersion.Status.RETIRED
        )
        retired = list(
            ModelVersion.objects.filter(
                project=locked, status=ModelVersion.Status.RETIRED
            ).values_list("id", flat=True)
        )
        for job in Job.objects.filter(
            project=locked, kind=Job.Kind.EMBED, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]
        ):
            if int(job.params.get("model_version_id") or 0) in retired:
                job_cancel(job_id=job.pk)
                outcome.jobs_cancelled.append(job.pk)
    store = get_blob_store()
    for version_id in retired:
        for key in list(store.list(embedding_prefix(model_version_id=version_id))):
            store.delete(key)
            outcome.blobs_deleted += 1
    if outcome.retired or outcome.blobs_deleted:
        logger.info(
            "project %s: retired versions %s, deleted %s embedding blobs, kept %s",
            project.pk, outcome.retired, outcome.blobs_deleted, outcome.kept,
        )  # fmt: skip
    return outcome


def embeddings_gc(*, keep_newest: int | None = None) -> dict[int, GcOutcome]:
    """:func:`project_embeddings_gc` for every project that has model versions."""
    projects = Project.objects.filter(model_versions__isnull=False).distinct().order_by("id")
    return {
        project.pk: project_embeddings_gc(project=project, keep_newest=keep_newest)
        for project in projects
    }
