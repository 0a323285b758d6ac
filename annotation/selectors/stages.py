"""What an admin looks at before moving a project to the next stage, and the stage history.

- masks accepted, split by who made them (annotators, prefill, automatic runs);
- annotation speed of the annotators' masks (s/mask, clicks/mask; prefilled and automatic masks
  have no annotator and are not in these averages, as in the paper);
- how prefill fares in practice: prefilled masks kept (accepted) against rejected in the tool;
- model quality per round (validation mIoU, clicks to 0.9) and the speed with each version, from
  the data-engine dashboard (``training.selectors_dashboard``);
- the stage changes recorded by ``project_stage_change`` (who, when, from, to).
"""

import json
from typing import Any, TypedDict

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Avg, Count, Q

from annotation.models import Mask, Project
from annotation.services.projects import STAGE_LOG_KEY
from engine.models import Job
from training.selectors_dashboard import RoundRow, project_dashboard

ANNOTATOR_SOURCES = (Mask.Source.MANUAL, Mask.Source.ASSISTED)


class StageChangeRow(TypedDict):
    at: str
    user: str
    previous: str
    stage: str


class MaskFigures(TypedDict):
    accepted: int
    accepted_by_annotators: int
    accepted_prefill: int
    accepted_automatic: int
    prefill_proposed: int
    prefill_rejected: int
    prefill_kept_fraction: float | None
    seconds_per_mask: float | None
    clicks_per_mask: float | None


class StageFigures(TypedDict):
    masks: MaskFigures
    rounds: list[RoundRow]
    history: list[StageChangeRow]
    prefill_runs: list[Job]


def project_mask_figures(*, project: Project) -> MaskFigures:
    """One aggregate query over the project's masks (index ``mask_project_status_id``)."""
    accepted = Q(status=Mask.Status.ACCEPTED)
    prefill = Q(source=Mask.Source.PREFILL)
    by_people = Q(annotator__isnull=False, source__in=ANNOTATOR_SOURCES)
    row = (
        Mask.objects.filter(project=project)
        .order_by()
        .aggregate(
            accepted=Count("id", filter=accepted),
            by_annotators=Count("id", filter=accepted & by_people),
            prefill=Count("id", filter=accepted & prefill),
            automatic=Count("id", filter=accepted & Q(source=Mask.Source.AUTOMATIC)),
            proposed=Count("id", filter=prefill & Q(status=Mask.Status.PROPOSED)),
            rejected=Count("id", filter=prefill & Q(status=Mask.Status.REJECTED)),
            seconds=Avg("seconds_spent", filter=by_people & ~Q(status=Mask.Status.PROPOSED)),
            clicks=Avg("clicks", filter=by_people & ~Q(status=Mask.Status.PROPOSED)),
        )
    )
    seen = row["prefill"] + row["rejected"]
    return {
        "accepted": row["accepted"],
        "accepted_by_annotators": row["by_annotators"],
        "accepted_prefill": row["prefill"],
        "accepted_automatic": row["automatic"],
        "prefill_proposed": row["proposed"],
        "prefill_rejected": row["rejected"],
        "prefill_kept_fraction": row["prefill"] / seen if seen else None,
        "seconds_per_mask": row["seconds"],
        "clicks_per_mask": None if row["clicks"] is None else float(row["clicks"]),
    }


def project_stage_history(*, project: Project, limit: int = 20) -> list[StageChangeRow]:
    """The project's stage changes, newest first."""
    entries = (
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Project),
            object_id=str(project.pk),
            change_message__contains=STAGE_LOG_KEY,
        )
        .select_related("user")
        .order_by("-action_time", "-id")[:limit]
    )
    rows: list[StageChangeRow] = []
    for entry in entries:
        try:
            change = json.loads(entry.change_message)[STAGE_LOG_KEY]
        except (ValueError, KeyError, TypeError):
            continue  # an admin-site message that happens to contain the key
        rows.append(
            {
                "at": entry.action_time.isoformat(),
                "user": entry.user.get_username(),
                "previous": str(change.get("from", "")),
                "stage": str(change.get("to", "")),
            }
        )
    return rows


def project_stage_figures(*, project: Project, runs: int = 5) -> StageFigures:
    """Everything the project page shows next to the stage control."""
    prefill_runs = list(
        Job.objects.filter(project=project, kind=Job.Kind.PREFILL).order_by("-id")[:runs]
    )
    return {
        "masks": project_mask_figures(project=project),
        "rounds": project_dashboard(project=project)["rounds"],
        "history": project_stage_history(project=project),
        "prefill_runs": prefill_runs,
    }


def stage_figures_json(figures: StageFigures) -> dict[str, Any]:
    """``figures`` as plain JSON (jobs as ids and states)."""
    return {
        "masks": dict(figures["masks"]),
        "rounds": [dict(row) for row in figures["rounds"]],
        "history": [dict(row) for row in figures["history"]],
        "prefill_runs": [
            {
                "id": job.pk,
                "status": job.status,
                "done": job.progress_done,
                "total": job.progress_total,
            }
            for job in figures["prefill_runs"]
        ],
    }
