"""Reads about images: by content hash, a project's images in id order, and their work state
(done, in progress = todo and leased to someone right now, todo = nobody holds it)."""

import datetime as dt

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from annotation.models import Image, ImageLease, Mask, Project

IMAGE_STATES = {
    "todo": "To do",
    "in_progress": "In progress",
    "done": "Done",
    "skipped": "Skipped",
}


def image_get_by_sha(*, project: Project, sha256: str) -> Image | None:
    """The image of ``project`` whose original bytes hash to ``sha256``, or None.

    Unique per project, so no ORDER BY: the lookup stays on the (project, sha256) index.
    """
    rows = list(Image.objects.filter(project=project, sha256=sha256).order_by()[:1])
    return rows[0] if rows else None


def images_by_sha(*, project: Project, sha256s: set[str]) -> dict[str, Image]:
    """The images of ``project`` among ``sha256s``, keyed by hash."""
    if not sha256s:
        return {}
    rows = Image.objects.filter(project=project, sha256__in=sha256s).order_by()
    return {image.sha256: image for image in rows}


def images_for_project(*, project: Project) -> QuerySet[Image]:
    """Every image of ``project`` in id (import) order."""
    return Image.objects.filter(project=project).order_by("id")


def images_with_state(*, project: Project, now: dt.datetime) -> QuerySet[Image]:
    """The project's images in id order, each with ``lease_holder`` (who holds an unexpired
    lease, or None), ``accepted_masks`` and ``skipped_by_name``."""
    held = ImageLease.objects.filter(image=OuterRef("pk"), expires_at__gt=now)
    accepted = (
        Mask.objects.filter(image=OuterRef("pk"), status=Mask.Status.ACCEPTED)
        .order_by()
        .values("image")
        .annotate(n=Count("id"))
        .values("n")
    )
    return images_for_project(project=project).annotate(
        lease_holder=Subquery(held.order_by("-expires_at").values("user__username")[:1]),
        accepted_masks=Coalesce(Subquery(accepted), 0),
        skipped_by_name=F("skipped_by__username"),
    )


def images_in_state(images: QuerySet[Image], *, state: str, now: dt.datetime) -> QuerySet[Image]:
    """``images`` narrowed to one of IMAGE_STATES (anything else: todo)."""
    held = Exists(ImageLease.objects.filter(image=OuterRef("pk"), expires_at__gt=now))
    if state == "done":
        return images.filter(status=Image.Status.DONE)
    if state == "skipped":
        return images.filter(status=Image.Status.SKIPPED)
    if state == "in_progress":
        return images.filter(held, status=Image.Status.TODO)
    return images.filter(~held, status=Image.Status.TODO)


def image_state_counts(*, project: Project, now: dt.datetime) -> dict[str, int]:
    """How many of the project's images are in each of IMAGE_STATES (one query)."""
    held = Exists(ImageLease.objects.filter(image=OuterRef("pk"), expires_at__gt=now))
    counts = (
        Image.objects.filter(project=project)
        .annotate(held=held)
        .aggregate(
            done=Count("id", filter=Q(status=Image.Status.DONE)),
            skipped=Count("id", filter=Q(status=Image.Status.SKIPPED)),
            in_progress=Count("id", filter=Q(status=Image.Status.TODO, held=True)),
            todo=Count("id", filter=Q(status=Image.Status.TODO, held=False)),
        )
    )
    return {state: int(counts[state]) for state in IMAGE_STATES}


def image_ids_named(*, project: Project, file_names: list[str]) -> dict[str, list[int]]:
    """``file_names`` -> the ids of the project's images stored under each (names are not
    unique: the same name from two folders); names with no image are left out."""
    found: dict[str, list[int]] = {}
    rows = Image.objects.filter(project=project, file_name__in=file_names).order_by("id")
    for name, image_id in rows.values_list("file_name", "id"):
        found.setdefault(name, []).append(image_id)
    return found


def images_named_like(images: QuerySet[Image], *, text: str) -> QuerySet[Image]:
    """The images whose file name contains ``text`` (any case): the project page's search."""
    return images.filter(file_name__icontains=text) if text else images
