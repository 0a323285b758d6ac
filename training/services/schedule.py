"""Round settings and schedules (django-celery-beat).

- cron: each project with ``schedule_cron`` has one ``PeriodicTask`` named
  ``training-round-cron-<project id>`` that runs ``training.schedule.scheduled_round(project_id)``;
  saving the settings creates, updates or removes it (``round_schedule_sync``);
- every N newly accepted masks: beat runs ``training.schedule.rounds_due`` every minute
  (``CELERY_BEAT_SCHEDULE``), which launches a round for each project that has ``every_n_masks``
  and at least that many masks accepted since its last round's snapshot. The count is checked
  again under ``round_launch``'s project lock, so two overlapping checks launch once.
"""

import json
import logging
from typing import Any

from celery.schedules import crontab
from django.db import transaction
from django_celery_beat.models import (
    CrontabSchedule,
    PeriodicTask,
)

from annotation.errors import DomainError
from annotation.models import Project
from training.loop.optim import SCOPES
from training.models import RoundSettings, TrainingRound
from training.selectors import round_settings_get
from training.services.round_limits import (
    ROUND_SETTING_RANGES,
    InvalidRoundSettings,
    round_setting_checked,
)

logger = logging.getLogger(__name__)

CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
SCHEDULED_TASK = "training.schedule.scheduled_round"
EDITABLE = (
    "min_masks",
    "steps",
    "scope",
    "lr",
    "masks_per_image",
    "auto_promote",
    "promote_margin",
    "schedule_cron",
    "every_n_masks",
)


def periodic_task_name(project_id: int) -> str:
    return f"training-round-cron-{project_id}"


def parse_cron(expression: str) -> dict[str, str]:
    """``"m h dom mon dow"`` -> CrontabSchedule fields; InvalidRoundSettings when malformed."""
    parts = expression.split()
    if len(parts) != len(CRON_FIELDS):
        raise InvalidRoundSettings(
            f"schedule_cron needs 5 fields (minute hour day month weekday), got {expression!r}"
        )
    fields = dict(zip(CRON_FIELDS, parts, strict=True))
    try:
        crontab(**fields)
    except (ValueError, TypeError) as exc:
        raise InvalidRoundSettings(f"schedule_cron {expression!r}: {exc}") from exc
    return fields


def round_settings_checked(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (some editable settings) checked and normalised; InvalidRoundSettings names
    the first bad one."""
    unknown = sorted(set(values) - set(EDITABLE))
    if unknown:
        raise InvalidRoundSettings(f"unknown round settings: {unknown}")
    out = dict(values)
    for name in ROUND_SETTING_RANGES:
        if name in out and not (name == "every_n_masks" and out[name] is None):  # null: off
            out[name] = round_setting_checked(name, out[name])
    if "scope" in out and out["scope"] not in SCOPES:
        raise InvalidRoundSettings(f"scope must be one of {list(SCOPES)}, not {out['scope']!r}")
    if "auto_promote" in out and not isinstance(out["auto_promote"], bool):
        raise InvalidRoundSettings("auto_promote must be true or false")
    if "schedule_cron" in out:
        cron = " ".join(str(out["schedule_cron"] or "").split())
        if cron:
            parse_cron(cron)
        out["schedule_cron"] = cron
    return out


@transaction.atomic
def round_settings_update(*, project: Project, values: dict[str, Any]) -> RoundSettings:
    """Change some of a project's round settings (checked first: nothing changes on a bad
    value) and sync its cron schedule."""
    checked = round_settings_checked(values)
    round_settings = round_settings_get(project=project)
    for name, value in checked.items():
        setattr(round_settings, name, value)
    round_settings.save()  # also syncs the PeriodicTask
    return round_settings


def round_schedule_sync(*, round_settings: RoundSettings) -> PeriodicTask | None:
    """Create, update or delete the project's cron PeriodicTask to match the settings."""
    name = periodic_task_name(round_settings.project_id)
    if not round_settings.schedule_cron:
        PeriodicTask.objects.filter(name=name).delete()
        return None
    fields = parse_cron(round_settings.schedule_cron)
    schedule, _ = CrontabSchedule.objects.get_or_create(**fields, timezone="UTC")
    task, _ = PeriodicTask.objects.update_or_create(
        name=name,
        defaults={
            "task": SCHEDULED_TASK,
            "crontab": schedule,
            "interval": None,
            "args": json.dumps([round_settings.project_id]),
            "queue": "default",
            "enabled": True,
            "description": f"retrain round of project {round_settings.project_id} on a cron",
        },
    )
    return task


def round_launch_scheduled(*, project_id: int, trigger: str = "cron") -> TrainingRound | None:
    """A scheduled launch: the round, or None when refused (logged: too few masks, one is
    running, no deployed version)."""
    from training.services.rounds import round_launch  # rounds imports this module's callers

    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return None
    round_settings = round_settings_get(project=project)
    try:
        return round_launch(
            project=project,
            user=None,
            trigger=trigger,
            min_new_masks=round_settings.every_n_masks if trigger == "every_n" else None,
        )
    except DomainError as exc:
        logger.info("scheduled round of %s not launched: %s", project, exc.message)
        return None


def rounds_due() -> list[int]:
    """Launch the rounds that every-N-masks schedules call for; returns their ids."""
    launched = []
    for round_settings in RoundSettings.objects.filter(every_n_masks__isnull=False):
        started = round_launch_scheduled(project_id=round_settings.project_id, trigger="every_n")
        if started is not None:
            launched.append(started.pk)
    return launched
