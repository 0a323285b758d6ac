"""The automatic-runs panel of the project page: start (SA-1B settings by default), cancel,
resume, progress. The project page includes ``annotation/_automatic_runs.html`` with the
context of :func:`automatic_panel_context`; the panel refreshes itself while a run is active
(``data-refresh-url``, app.js)."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.errors import DomainError
from annotation.models import Project
from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import project_get_for_user
from engine.models import Job
from engine.services.automatic import (
    automatic_cancel,
    automatic_resume,
    automatic_start,
)
from engine.services.automatic.params import (
    AUTOMATIC,
    InvalidAutomaticSettings,
    resolve_settings,
)
from engine.services.automatic.selectors import (
    automatic_image_filter,
    automatic_runs,
)

RUNS_SHOWN = 5
FILTERS = [("all", "all images"), ("todo", "images still to do")]
# The settings the start form shows and lets an admin change (the rest: API or CLI).
FORM_SETTINGS = (
    "points_per_side",
    "crop_n_layers",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "min_mask_region_area",
    "max_mask_area_fraction",
)


def automatic_panel_context(*, project: Project) -> dict[str, Any]:
    """What ``_automatic_runs.html`` shows: the latest runs and the settings a run would use."""
    runs = list(automatic_runs(project=project, kind=Job.Kind.AUTOMATIC)[:RUNS_SHOWN])
    try:
        defaults = resolve_settings(
            mode=AUTOMATIC, project_settings=project.automatic_settings, params=None
        )
    except InvalidAutomaticSettings:
        defaults = resolve_settings(mode=AUTOMATIC, project_settings={}, params=None)
    return {
        "project": project,
        "automatic_runs": runs,
        "automatic_active": any(not run.is_finished for run in runs),
        "automatic_settings": [(name, defaults[name]) for name in FORM_SETTINGS],
        "automatic_filters": FILTERS,
    }


def _admin_project(request: HttpRequest, project_id: int) -> Project:
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    return project


@require_GET
@login_required
def automatic_panel(request: HttpRequest, project_id: int) -> HttpResponse:
    """The panel alone, for the page's refresh."""
    project = _admin_project(request, project_id)
    return render(
        request, "annotation/_automatic_runs.html", automatic_panel_context(project=project)
    )


def _form_overrides(request: HttpRequest) -> dict[str, Any]:
    """The form's changed settings, typed like their defaults ("" leaves a default alone)."""
    overrides: dict[str, Any] = {}
    for name in FORM_SETTINGS:
        raw = request.POST.get(name, "").strip()
        if not raw:
            continue
        if raw.lower() == "none":
            overrides[name] = None
            continue
        try:
            number = float(raw)
        except ValueError as exc:
            raise InvalidAutomaticSettings(f"{name} must be a number, got {raw!r}") from exc
        overrides[name] = int(number) if number.is_integer() and "." not in raw else number
    return overrides


@require_POST
@login_required
def automatic_start_view(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _admin_project(request, project_id)
    try:
        image_ids = automatic_image_filter(project=project, spec=request.POST.get("images", "all"))
        job = automatic_start(
            project=project,
            user=acting_user(request.user),
            params=_form_overrides(request),
            image_ids=image_ids,
        )
    except (DomainError, ValueError) as exc:
        messages.error(request, f"The run did not start: {getattr(exc, 'message', exc)}")
        return redirect("project-detail", project_id=project.pk)
    messages.success(request, f"Automatic run #{job.pk} started on {job.progress_total} images.")
    return redirect("project-detail", project_id=project.pk)


def _run_action(request: HttpRequest, project_id: int, job_id: int, action: str) -> HttpResponse:
    project = _admin_project(request, project_id)
    if not automatic_runs(project=project).filter(pk=job_id).exists():
        messages.error(request, f"No automatic run #{job_id} in this project.")
        return redirect("project-detail", project_id=project.pk)
    try:
        if action == "cancel":
            job = automatic_cancel(job_id=job_id)
        else:
            job = automatic_resume(
                job_id=job_id, retry_failed=bool(request.POST.get("retry_failed"))
            )
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("project-detail", project_id=project.pk)
    messages.info(request, f"Automatic run #{job.pk} is {job.get_status_display().lower()}.")
    return redirect("project-detail", project_id=project.pk)


@require_POST
@login_required
def automatic_cancel_view(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    return _run_action(request, project_id, job_id, "cancel")


@require_POST
@login_required
def automatic_resume_view(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    return _run_action(request, project_id, job_id, "resume")
