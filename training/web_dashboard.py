"""The data-engine dashboard page (reviewers and admins) and its promote / rollback buttons
(admins). Charts are drawn in the browser by ``charts.js`` from the per-round series the page
embeds; the same numbers are in its table."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.errors import DomainError
from annotation.permissions import (
    ADMIN,
    REVIEWER,
    acting_user,
    has_role,
    require_admin,
    require_role,
)
from annotation.selectors.projects import project_get_for_user
from engine.selectors import model_version_for_project
from training.selectors_dashboard import project_dashboard
from training.services.promotion import rollback_target, version_promote, version_rollback


@require_GET
@login_required
def dashboard_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, role=REVIEWER)
    dashboard = project_dashboard(project=project)
    target = rollback_target(project=project)
    context = {
        "project": project,
        "dashboard": dashboard,
        "rounds_newest_first": list(reversed(dashboard["rounds"])),
        "chart_data": {"rounds": dashboard["rounds"]},
        "is_admin": has_role(user=request.user, project=project, role=ADMIN),
        "rollback_target": target,
    }
    return render(request, "training/dashboard.html", context)


@require_POST
@login_required
def promote_view(request: HttpRequest, project_id: int, version_id: int) -> HttpResponse:
    user = acting_user(request.user)
    project = project_get_for_user(user=user, project_id=project_id)
    require_admin(user=user, project=project)
    version = model_version_for_project(project=project, version_id=version_id)
    if version is None:
        raise Http404("no such model version in this project")
    try:
        version_promote(version=version, user=user, reason=request.POST.get("reason", "")[:500])
    except DomainError as exc:
        messages.error(request, f"Not promoted: {exc.message}")
    else:
        messages.success(
            request, f"Version {version.pk} is live; its embeddings are being computed."
        )
    return redirect("project-dashboard", project_id=project.pk)


@require_POST
@login_required
def rollback_view(request: HttpRequest, project_id: int) -> HttpResponse:
    user = acting_user(request.user)
    project = project_get_for_user(user=user, project_id=project_id)
    require_admin(user=user, project=project)
    try:
        version = version_rollback(project=project, user=user)
    except DomainError as exc:
        messages.error(request, f"Not rolled back: {exc.message}")
    else:
        messages.success(request, f"Rolled back: version {version.pk} is live again.")
    return redirect("project-dashboard", project_id=project.pk)
