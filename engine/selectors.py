"""Reads of the engine: model versions and the images an embedding job walks through."""

from django.db.models import QuerySet

from annotation.models import Image, Project
from engine.models import ModelVersion


def model_version_get(*, version_id: int) -> ModelVersion:
    """The version with its project (``ModelVersion.DoesNotExist`` if none)."""
    return ModelVersion.objects.select_related("project").get(pk=version_id)


def model_version_by_sha(*, project: Project, sha256: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(project=project, sha256=sha256).first()


def model_version_for_project(*, project: Project, version_id: int) -> ModelVersion | None:
    """Version ``version_id`` if it belongs to ``project``, else None."""
    return ModelVersion.objects.filter(project=project, pk=version_id).first()


def image_get(*, image_id: int) -> Image:
    """``Image.DoesNotExist`` if none."""
    return Image.objects.get(pk=image_id)


def project_images_after(*, project: Project, after_id: int, limit: int) -> list[Image]:
    """The next ``limit`` images of ``project`` with an id above ``after_id``, in id order."""
    return list(
        Image.objects.filter(project=project, pk__gt=after_id)
        .only("id", "sha256", "blob_key", "width", "height")
        .order_by("id")[:limit]
    )


def project_image_count(*, project: Project) -> int:
    return Image.objects.filter(project=project).count()


def project_images_by_ids(*, project: Project, image_ids: list[int]) -> QuerySet[Image]:
    return Image.objects.filter(project=project, pk__in=image_ids)
