"""Stats pages: a project's annotation speed over time (reviewers and admins) and one
annotator's (themselves, or reviewers and admins). Charts are drawn in the browser from the
per-day series the page embeds; the same numbers are in its tables. The per-annotator table
also downloads as CSV."""

import csv
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.text import slugify
from django.views.decorators.http import require_GET

from annotation.models import Project
from annotation.permissions import REVIEWER, has_role, require_role
from annotation.selectors.projects import project_get_for_user
from annotation.selectors.stats import (
    MAX_DAYS,
    Stats,
    annotator_stats,
    has_worked_in,
    project_stats,
)

DAY_CHOICES = (7, 30, 90)
DEFAULT_DAYS = 30


def _days(raw: str | None) -> int:
    """``?days=N`` (1 to MAX_DAYS); a missing or malformed value falls back to 30."""
    if raw is None or not raw.isdigit():
        return DEFAULT_DAYS
    return min(max(int(raw), 1), MAX_DAYS)


def _chart_data(stats: Stats) -> dict[str, Any]:
    """The per-day series as plain JSON for ``charts.js`` (dates as ISO strings)."""
    return {"per_day": [{**day, "date": day["date"].isoformat()} for day in stats["per_day"]]}


def _render(
    request: HttpRequest,
    *,
    project: Project,
    stats: Stats,
    days: int,
    subject: User | None,
    may_see_project: bool,
) -> HttpResponse:
    context = {
        "project": project,
        "stats": stats,
        "days": days,
        "day_choices": sorted({*DAY_CHOICES, days}),
        "subject": subject,
        "may_see_project": may_see_project,
        "per_annotator": stats.get("per_annotator"),
        "per_category": stats.get("per_category") or [],
        # Newest first in the table; days without masks are only gaps in the charts.
        "days_with_masks": [day for day in reversed(stats["per_day"]) if day["masks"]],
        "chart_data": _chart_data(stats),
        "time_zone": settings.TIME_ZONE,
    }
    return render(request, "annotation/stats.html", context)


def _project_window(request: HttpRequest, project_id: int) -> tuple[Project, int]:
    """The project whose figures a reviewer or admin asks for, and the ``?days=`` window."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, role=REVIEWER)
    return project, _days(request.GET.get("days"))


@require_GET
@login_required
def project_stats_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project, days = _project_window(request, project_id)
    stats = project_stats(project=project, days=days)
    return _render(
        request, project=project, stats=stats, days=days, subject=None, may_see_project=True
    )


def _annotator(*, project: Project, user_id: int) -> User:
    """A member of the project, or a former one who made masks in it; 404 for anyone else."""
    worked_in = has_worked_in(project=project, user_id=user_id)
    user = User.objects.filter(pk=user_id).first() if worked_in else None
    if user is None:
        raise Http404("no such annotator in this project")
    return user


@require_GET
@login_required
def annotator_stats_page(request: HttpRequest, project_id: int, user_id: int) -> HttpResponse:
    """Annotators see only their own page (403 for another's); reviewers and admins anyone's."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    may_see_project = has_role(user=request.user, project=project, role=REVIEWER)
    if user_id != request.user.pk and not may_see_project:
        raise PermissionDenied("annotators may see only their own statistics")
    subject = _annotator(project=project, user_id=user_id)
    days = _days(request.GET.get("days"))
    stats = annotator_stats(project=project, user_id=subject.pk, days=days)
    return _render(
        request,
        project=project,
        stats=stats,
        days=days,
        subject=subject,
        may_see_project=may_see_project,
    )


# The per-annotator table as a spreadsheet (payroll, vendor QA reports); one row per annotator.
CSV_COLUMNS = (
    "user_id",
    "username",
    "masks",
    "seconds_per_mask",
    "clicks_per_mask",
    "masks_reviewed",
    "masks_rejected",
    "rejection_rate",
    "images_skipped",
)


@require_GET
@login_required
def project_stats_csv(request: HttpRequest, project_id: int) -> HttpResponse:
    """``?days=N``: the per-annotator figures of the project page's table, as CSV."""
    project, days = _project_window(request, project_id)
    rows = project_stats(project=project, days=days)["per_annotator"]
    name = f"{slugify(project.name) or 'project'}-annotators-{days}d.csv"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.DictWriter(response, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return response
