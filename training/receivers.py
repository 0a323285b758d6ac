"""The training app's answers to annotation's signals (connected in TrainingConfig.ready)."""

from typing import Any

from annotation.models import Project
from training.models import RoundSettings, TrainingRound, ValidationSplit


def validation_split_drop(*, project: Project, image_ids: set[int], **_: Any) -> int:
    """Take removed images out of the project's frozen validation split; how many were in it.
    Later rounds are then measured on the images left (their masks are gone anyway)."""
    split = ValidationSplit.objects.select_for_update().filter(project=project).first()
    if split is None:
        return 0
    kept = [image_id for image_id in split.image_ids if image_id not in image_ids]
    removed = len(split.image_ids) - len(kept)
    if removed:
        ValidationSplit.objects.filter(pk=split.pk).update(image_ids=kept)
    return removed


def project_rows_delete(*, project: Project, **_: Any) -> list[str]:
    """Delete the project's rounds (their job and parent links are protected), validation split,
    round settings and cron schedule; the keys of the rounds' resumable state."""
    from django_celery_beat.models import PeriodicTask

    from training.services.round_run import state_key
    from training.services.schedule import periodic_task_name

    round_ids = list(TrainingRound.objects.filter(project=project).values_list("pk", flat=True))
    TrainingRound.objects.filter(project=project).delete()
    ValidationSplit.objects.filter(project=project).delete()
    RoundSettings.objects.filter(project=project).delete()
    PeriodicTask.objects.filter(name=periodic_task_name(int(project.pk))).delete()
    return [state_key(round_id) for round_id in round_ids]
