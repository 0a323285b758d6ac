"""Reads about images: by content hash, and a project's images in id order."""

from django.db.models import QuerySet

from annotation.models import Image, Project


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
