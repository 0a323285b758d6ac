"""Reads of the training app: rounds, their settings and the validation split."""

from django.db.models import QuerySet
from django.http import Http404

from annotation.models import Project
from training.models import RoundSettings, TrainingRound, ValidationSplit


def rounds_for_project(*, project: Project) -> QuerySet[TrainingRound]:
    """Newest first, with job, versions and creator joined (one query for a list page)."""
    return (
        TrainingRound.objects.filter(project=project)
        .select_related("job", "parent_version", "produced_version", "created_by")
        .order_by("-number")
    )


def round_get(*, project: Project, number: int) -> TrainingRound:
    """The project's round ``number``; Http404 when there is none."""
    found = rounds_for_project(project=project).filter(number=number).first()
    if found is None:
        raise Http404(f"project {project.name!r} has no round {number}")
    return found


def round_for_job(*, job_id: int) -> TrainingRound:
    return TrainingRound.objects.select_related(
        "job", "project", "parent_version", "created_by"
    ).get(job_id=job_id)


def round_settings_get(*, project: Project) -> RoundSettings:
    """The stored settings, or the defaults (unsaved) when the project has none yet."""
    found = RoundSettings.objects.filter(project=project).first()
    return found if found is not None else RoundSettings(project=project)


def validation_split_get(*, project: Project) -> ValidationSplit | None:
    return ValidationSplit.objects.filter(project=project).first()
