"""Launching and cancelling retrain rounds (the run itself is ``training.services.round_run``).

``round_launch`` is one transaction that first locks the project row (``SELECT ... FOR
UPDATE``): two launches for one project, from two admins, the API and the beat schedule at
once, are serialised, and the second sees the first's round and is refused (409). Within that
lock it freezes the validation split (first round only), snapshots the accepted training masks,
creates the ``train`` Job and the round, and queues the job on the ``gpu`` queue once the
transaction commits. Anything refused raises before a row is written, so nothing changes.
"""

import dataclasses
import logging
import random
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max

from annotation.errors import ConflictError, DomainError
from annotation.models import Mask, Project
from annotation.selectors.masks import usable_masks
from engine.models import Job, ModelVersion
from engine.services.jobs import job_cancel, job_create, job_enqueue
from training.loop.optim import SCOPES
from training.loop.trainer import TrainConfig
from training.models import RoundSettings, TrainingRound, ValidationSplit
from training.selectors import round_settings_get
from training.services.round_limits import (
    ROUND_SETTING_RANGES,
    InvalidRoundSettings,
    round_setting_checked,
)
from training.services.snapshot import ids_to_ranges, ranges_count

logger = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.2
# Launch overrides a caller may give (the rest of TrainConfig keeps its defaults).
OVERRIDABLE = frozenset(field.name for field in dataclasses.fields(TrainConfig))


class RoundRefused(DomainError):
    """The round cannot start as asked (no parent version, a bad setting...)."""

    code = "round_refused"


class TooFewMasks(DomainError):
    """Not enough accepted masks outside the validation split; ``needed`` says how many more."""

    code = "too_few_masks"


class RoundAlreadyActive(ConflictError):
    """Another round of the project is queued or running."""

    code = "round_active"


def _check_value(name: str, value: Any, default: Any) -> Any:
    """One TrainConfig override, checked against the range of its round setting, else against
    the type of its default."""
    if name in ROUND_SETTING_RANGES:
        return round_setting_checked(name, value)
    if name == "scope":
        if value not in SCOPES:
            raise RoundRefused(f"scope must be one of {list(SCOPES)}, not {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RoundRefused(f"{name} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RoundRefused(f"{name} must be a non-negative integer, not {value!r}")
        if value == 0 and name in {"images_per_step", "accumulate"}:
            raise RoundRefused(f"{name} must be at least 1")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise RoundRefused(f"{name} must be a non-negative number, not {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
        ):
            raise RoundRefused(f"{name} must be a list of positive integers, not {value!r}")
        return tuple(value)
    raise RoundRefused(f"{name} cannot be overridden")


def train_config_for(
    *, round_settings: RoundSettings, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The project's settings (steps, scope, lr, masks_per_image) plus checked overrides.

    The stored settings are checked too: a row saved before the ranges were enforced (or
    written around the services) refuses the launch instead of training with its values."""
    values: dict[str, Any] = {
        "steps": round_settings.steps,
        "scope": round_settings.scope,
        "lr": round_settings.lr,
        "masks_per_image": round_settings.masks_per_image,
    }
    try:
        for name in ("steps", "lr", "masks_per_image"):
            values[name] = round_setting_checked(name, values[name])
    except InvalidRoundSettings as exc:
        raise InvalidRoundSettings(
            f"the project's round settings: {exc.message}; change them before launching",
            details=exc.details,
        ) from exc
    defaults = TrainConfig()
    for name, value in (overrides or {}).items():
        if name not in OVERRIDABLE:
            raise RoundRefused(f"unknown training setting {name!r}; known: {sorted(OVERRIDABLE)}")
        values[name] = _check_value(name, value, getattr(defaults, name))
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError) as exc:
        raise RoundRefused(f"bad training settings: {exc}") from exc


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    known = {field.name: field for field in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in data.items()
        if key in known
    }
    return TrainConfig(**values)


def _parent_for(project: Project, parent: ModelVersion | None) -> ModelVersion:
    version = parent or project.deployed_version
    if version is None:
        raise RoundRefused(
            f"project {project.name!r} has no deployed model version to train from; deploy one "
            "or name a parent version"
        )
    if version.project_id != project.pk:
        raise RoundRefused(f"model version {version.pk} is not in project {project.name!r}")
    if version.status != ModelVersion.Status.READY:
        raise RoundRefused(f"model version {version.pk} is {version.status}, not ready")
    return version


def round_masks(project: Project) -> Any:
    """What rounds train and validate on: accepted masks, but not those of skipped images."""
    return usable_masks(project=project, status=Mask.Status.ACCEPTED)


def _validation_split(project: Project, min_masks: int) -> ValidationSplit:
    """The project's frozen split; created now (first round) from the images that have
    accepted masks: a seeded ``VALIDATION_FRACTION`` of them, at least one, never all."""
    existing = ValidationSplit.objects.filter(project=project).first()
    if existing is not None:
        return existing
    image_ids = sorted(set(round_masks(project).values_list("image_id", flat=True)))
    if len(image_ids) < 2:
        raise TooFewMasks(
            f"the first round needs accepted masks on at least 2 images (one is kept for "
            f"validation); project {project.name!r} has them on {len(image_ids)}",
            extra={"needed": max(1, min_masks), "min_masks": min_masks, "available": 0},
        )
    seed = random.SystemRandom().randrange(2**31)
    count = min(len(image_ids) - 1, max(1, round(VALIDATION_FRACTION * len(image_ids))))
    chosen = sorted(random.Random(seed).sample(image_ids, count))
    return ValidationSplit.objects.create(
        project=project, image_ids=chosen, seed=seed, fraction=VALIDATION_FRACTION
    )


def active_round(*, project: Project) -> TrainingRound | None:
    return (
        TrainingRound.objects.filter(project=project)
        .exclude(job__status__in=Job.FINISHED)
        .select_related("job")
        .first()
    )


@transaction.atomic
def round_launch(
    *,
    project: Project,
    user: User | None,
    overrides: dict[str, Any] | None = None,
    parent: ModelVersion | None = None,
    trigger: str = "manual",
    min_new_masks: int | None = None,
    enqueue: bool = True,
) -> TrainingRound:
    """Snapshot the accepted masks and queue a round training ``parent`` (default: deployed).

    The caller checks the admin role. Raises RoundAlreadyActive (409) while another round of
    the project is queued or running, TooFewMasks (with ``needed``) below the project's
    ``min_masks``, RoundRefused for a missing parent or a bad override. ``min_new_masks``
    (schedules): refuse unless that many masks were accepted since the last round's snapshot,
    checked under the same lock. ``enqueue=False`` leaves the job for the caller to run.
    """
    locked = Project.objects.select_for_update().get(pk=project.pk)
    active = active_round(project=locked)
    if active is not None:
        raise RoundAlreadyActive(
            f"round {active.number} of project {locked.name!r} is {active.job.status}; wait for "
            "it to finish or cancel it",
            extra={"round": active.number},
        )
    last = TrainingRound.objects.filter(project=locked).order_by("-number").first()
    if min_new_masks is not None:
        new = round_masks(locked).filter(id__gt=last.snapshot_max_mask_id if last else 0).count()
        if new < min_new_masks:
            raise TooFewMasks(
                f"{new} masks accepted since the last round; the schedule waits for "
                f"{min_new_masks}",
                extra={"needed": min_new_masks - new, "available": new},
            )
    round_settings = round_settings_get(project=locked)
    config = train_config_for(round_settings=round_settings, overrides=overrides)
    version = _parent_for(locked, parent)
    split = _validation_split(locked, round_settings.min_masks)
    accepted = round_masks(locked).order_by("id")
    train = accepted.exclude(image_id__in=split.image_ids)
    train_ranges = ids_to_ranges(train.values_list("id", flat=True).iterator(10_000))
    train_masks = ranges_count(train_ranges)
    if train_masks < round_settings.min_masks:
        needed = round_settings.min_masks - train_masks
        raise TooFewMasks(
            f"a round needs at least {round_settings.min_masks} accepted masks outside the "
            f"validation split; project {locked.name!r} has {train_masks}: {needed} more needed",
            extra={
                "needed": needed,
                "min_masks": round_settings.min_masks,
                "available": train_masks,
            },
        )
    validation = accepted.filter(image_id__in=split.image_ids)
    validation_ranges = ids_to_ranges(validation.values_list("id", flat=True).iterator(10_000))
    number = (last.number if last else 0) + 1
    job = job_create(
        kind=Job.Kind.TRAIN,
        project=locked,
        params={"round": number, "parent_version_id": version.pk, "trigger": trigger},
        created_by=user,
        total=config.steps,
        message=f"round {number} queued",
    )
    training_round = TrainingRound.objects.create(
        project=locked,
        number=number,
        job=job,
        parent_version=version,
        train_mask_ranges=train_ranges,
        validation_mask_ranges=validation_ranges,
        snapshot_max_mask_id=Mask.objects.filter(project=locked).aggregate(m=Max("id"))["m"] or 0,
        train_masks=train_masks,
        train_images=train.values("image_id").distinct().count(),
        validation_masks=ranges_count(validation_ranges),
        validation_images=validation.values("image_id").distinct().count(),
        config=config_to_dict(config),
        trigger=trigger[:16],
        created_by=user if user is not None and user.pk else None,
    )
    if enqueue:
        from training.tasks import gpu_train_round  # the task module imports the services

        job_enqueue(job=job, task=gpu_train_round, queue="gpu")
    logger.info(
        "round %s of %s launched (%s masks on %s images, parent version %s, by %s)",
        number,
        locked,
        train_masks,
        training_round.train_images,
        version.pk,
        user or trigger,
    )
    return training_round


def round_cancel(*, training_round: TrainingRound) -> TrainingRound:
    """Cancel a queued or running round (the worker stops at its next progress report); a
    finished round is returned unchanged."""
    job_cancel(job_id=training_round.job_id)
    training_round.job.refresh_from_db()
    return training_round
