"""Requests that name a set of a project's images by id (remove, reopen): the id list's checks
and the lookup that names the ids that are not the project's."""

from django.db.models import QuerySet

from annotation.errors import DomainError
from annotation.ids import MAX_ID, id_in_range
from annotation.models import Image, Project

MAX_IMAGES_PER_REQUEST = 10_000
CHUNK = 2_000  # ids per IN (...) query


class ImagesNotFound(DomainError):
    status_code = 404
    code = "not_found"


def image_ids_checked(image_ids: object, *, refused: type[DomainError]) -> list[int]:
    """The ids of a request, deduplicated in order; ``refused`` (a 400) for anything else."""
    if not isinstance(image_ids, list | tuple) or not image_ids:
        raise refused("image_ids must be a non-empty list of image ids")
    if len(image_ids) > MAX_IMAGES_PER_REQUEST:
        raise refused(f"{len(image_ids)} image ids: at most {MAX_IMAGES_PER_REQUEST} per request")
    bad = [
        value
        for value in image_ids
        if not isinstance(value, int) or isinstance(value, bool) or not id_in_range(value)
    ]
    if bad:
        raise refused(f"image ids must be integers from 1 to {MAX_ID}, got {bad[:5]!r}")
    return list(dict.fromkeys(image_ids))


def id_chunks(ids: list[int]) -> list[list[int]]:
    return [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]


def project_images_or_404(
    images: QuerySet[Image], *, project: Project, ids: list[int], action: str
) -> dict[int, Image]:
    """``ids``' rows from ``images`` (already narrowed to ``project``, locked if the caller
    wants), by id; ImagesNotFound naming the ids that are not images of the project, where
    ``action`` says what did not happen ("removed", "reopened")."""
    found: dict[int, Image] = {}
    for chunk in id_chunks(ids):
        found.update((image.pk, image) for image in images.filter(pk__in=chunk))
    missing = [image_id for image_id in ids if image_id not in found]
    if missing:
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        raise ImagesNotFound(
            f"not images of project {project.name!r}: {missing[:10]}{more}; nothing was {action}",
            extra={"missing": missing[:100]},
        )
    return found
