"""After a promotion: compute the new version's embeddings, the images annotators are on first.

Two steps on the ``gpu`` queue, both through the engine's own embedding services:

1. the images *in progress* — leased to someone right now, or not done yet but with masks
   accepted on them — are queued one task each at annotator priority (``embeddings_request``,
   most recently touched first, at most ``PRIORITY_LIMIT``): the next click of an annotator who
   switches to the new version finds its embedding soon;
2. an ``embed`` Job walks every image of the project at bulk priority
   (``embeddings_precompute_start``), skipping the ones stored meanwhile.

Both are idempotent (a stored embedding is never computed again), so calling this twice for a
version costs one extra pass over the blob store, no GPU work.
"""

import logging
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import Max, Q
from django.utils import timezone

from annotation.models import Image, Mask, Project
from engine.models import Job, ModelVersion
from engine.services.embeddings import embeddings_precompute_start, embeddings_request

logger = logging.getLogger(__name__)

PRIORITY_LIMIT = 256


@dataclass(frozen=True)
class RedeployEmbeddings:
    version_id: int
    priority_image_ids: list[int]  # queued one by one at annotator priority (not stored yet)
    job: Job  # the bulk embed job over the whole project


def images_in_progress(*, project: Project, limit: int = PRIORITY_LIMIT) -> list[Image]:
    """Images of ``project`` someone is working on: leased now (latest lease first), then the
    unfinished ones with accepted masks (latest mask first); each once, at most ``limit``."""
    now = timezone.now()
    leased = list(
        Image.objects.filter(project=project, leases__expires_at__gt=now)
        .annotate(latest=Max("leases__created_at", filter=Q(leases__expires_at__gt=now)))
        .order_by("-latest", "id")[:limit]
    )
    seen = {image.pk for image in leased}
    partial = (
        Image.objects.filter(
            project=project,
            status=Image.Status.TODO,
            masks__status=Mask.Status.ACCEPTED,
        )
        .exclude(pk__in=seen)
        .annotate(latest=Max("masks__id"))
        .order_by("-latest", "id")[: max(0, limit - len(leased))]
    )
    return [*leased, *partial]


def redeploy_embeddings_start(*, version_id: int, user_id: int | None = None) -> RedeployEmbeddings:
    """Queue the embeddings of version ``version_id`` (see the module docstring)."""
    version = ModelVersion.objects.select_related("project").get(pk=version_id)
    project = version.project
    user = User.objects.filter(pk=user_id).first() if user_id is not None else None
    urgent = images_in_progress(project=project)
    queued = embeddings_request(images=urgent, model_version=version, priority=True)
    job = embeddings_precompute_start(project=project, model_version=version, user=user)
    logger.info(
        "version %s of project %s: %s in-progress images queued first, embed job %s",
        version.pk, project.pk, len(queued), job.pk,
    )  # fmt: skip
    return RedeployEmbeddings(version_id=version.pk, priority_image_ids=queued, job=job)
