"""The training app's answers to annotation's signals (connected in TrainingConfig.ready)."""

from typing import Any

from annotation.models import Project
from training.models import ValidationSplit


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
