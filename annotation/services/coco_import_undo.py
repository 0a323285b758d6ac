"""Taking a COCO import back: every mask it created is deleted (reviewed or not), and its job
says when, by whom and how many. For the wrong file imported, or into the wrong project."""

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from annotation.errors import ConflictError, DomainError
from annotation.models import Mask, Project
from engine.models import Job


class ImportUndoRefused(DomainError):
    code = "undo_refused"


@dataclass(frozen=True)
class ImportUndone:
    job_id: int
    deleted: int


class ImportNotFound(DomainError):
    status_code = 404
    code = "not_found"


@transaction.atomic
def coco_import_undo(*, project: Project, job_id: int, user: User | None = None) -> ImportUndone:
    """Delete the masks import job ``job_id`` of ``project`` created; again, deletes nothing
    (0). Refused for a job of another project (404) or kind (400), and for an import still
    running (409)."""
    job = Job.objects.select_for_update().filter(pk=job_id, project=project).first()
    if job is None:
        raise ImportNotFound(f"project {project.name!r} has no job #{job_id}")
    if job.kind != Job.Kind.IMPORT_MASKS:
        raise ImportUndoRefused(
            f"job #{job.pk} is a {job.get_kind_display().lower()}, not an import"
        )
    if not job.is_finished:
        raise ConflictError(f"import #{job.pk} is {job.status}: wait for it to finish")
    _, per_model = Mask.objects.filter(job=job, source=Mask.Source.IMPORTED).delete()
    deleted = per_model.get(Mask._meta.label, 0)
    result = dict(job.result or {})
    undone = list(result.get("undone") or [])
    undone.append(
        {
            "at": timezone.now().isoformat(),
            "by": user.get_username() if user is not None else None,
            "deleted": deleted,
        }
    )
    result["undone"] = undone
    Job.objects.filter(pk=job.pk).update(
        result=result, message=f"undone: {deleted} imported masks deleted"
    )
    return ImportUndone(job_id=job.pk, deleted=deleted)
