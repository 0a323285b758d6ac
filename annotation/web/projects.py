"""Project list and project page: progress, image grid with status, annotator stats, members,
upload and export, the data engine's stage with the figures behind the decision, and
semi-automatic prefill (project admins)."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.errors import DomainError, ImageRejected
from annotation.ids import id_from_query
from annotation.models import Membership, Project, Stage
from annotation.permissions import (
    ADMIN,
    REVIEWER,
    acting_user,
    can_create_projects,
    has_role,
    require_admin,
    role_in,
)
from annotation.selectors.categories import categories_with_masks
from annotation.selectors.images import (
    IMAGE_STATES,
    image_state_counts,
    images_in_state,
    images_named_like,
    images_with_state,
)
from annotation.selectors.projects import (
    project_get_for_user,
    project_get_with_stats,
    project_jobs,
    project_members,
    projects_with_stats,
)
from annotation.selectors.review import masks_sent_back, review_pending_masks
from annotation.selectors.stages import project_stage_figures
from annotation.selectors.stats import annotator_skipped, annotator_stats, project_stats
from annotation.services.export import export_start
from annotation.services.ingest import images_ingest_batch
from annotation.services.projects import project_create, project_stage_change
from annotation.services.semi_automatic import prefill_settings_resolved, prefill_start
from annotation.web.automatic import automatic_panel_context

IMAGES_PER_PAGE = 48
NAME_SEARCH_MAX = 200  # characters of the image grid's file-name search
JOBS_SHOWN = 10
EXPORT_FORMATS = {"coco": "COCO", "sa1b": "SA-1B"}
STATS_DAYS = 30


def _project_list_page(
    request: HttpRequest, *, create_error: str = "", create_open: bool = False, status: int = 200
) -> HttpResponse:
    context = {
        "projects": projects_with_stats(user=request.user),
        "can_create": can_create_projects(request.user),
        "create_open": create_open or bool(create_error),
        "create_error": create_error,
        "create_name": request.POST.get("name", "") if create_error else "",
        "create_description": request.POST.get("description", "") if create_error else "",
    }
    return render(request, "annotation/project_list.html", context, status=status)


@require_GET
@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    return _project_list_page(request)


@require_http_methods(["GET", "POST"])
@login_required
def project_create_view(request: HttpRequest) -> HttpResponse:
    """Staff create a project and become its first admin. A GET (a reload after a refused
    create, a pasted link) shows the project list with the create form open."""
    if not can_create_projects(request.user):
        raise PermissionDenied("only staff users create projects")
    if request.method == "GET":
        return _project_list_page(request, create_open=True)
    try:
        project = project_create(
            name=request.POST.get("name", ""),
            description=request.POST.get("description", ""),
            creator=acting_user(request.user),
        )
    except DomainError as exc:
        return _project_list_page(request, create_error=exc.message, status=400)
    messages.success(request, f"Project {project.name!r} created.")
    return redirect("project-detail", project_id=project.pk)


def jobs_table_context(*, project: Project) -> dict[str, Any]:
    """What ``_jobs_table.html`` shows: the latest jobs of every kind (exports, imports,
    embeddings, rounds, prefill and automatic runs), newest first, and whether any still runs."""
    jobs = list(project_jobs(project=project)[:JOBS_SHOWN])
    return {
        "project": project,
        "jobs": jobs,
        "jobs_shown": JOBS_SHOWN,
        "jobs_active": any(not job.is_finished for job in jobs),
    }


def _annotator_figures(request: HttpRequest, project: Project, *, may_review: bool) -> Any:
    """Reviewers and admins see every annotator of the last days; annotators only themselves."""
    if may_review:
        return project_stats(project=project, days=STATS_DAYS)["per_annotator"]
    user = acting_user(request.user)
    mine = annotator_stats(project=project, user_id=user.pk, days=STATS_DAYS)["totals"]
    skipped = annotator_skipped(project=project, user_id=user.pk, days=STATS_DAYS)
    return [
        {"user_id": user.pk, "username": user.get_username(), **mine, "images_skipped": skipped}
    ]


def project_page(
    request: HttpRequest,
    project_id: int,
    *,
    upload_rejections: list[dict[str, str]] | None = None,
    coco_problems: dict[str, Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    project = project_get_with_stats(user=request.user, project_id=project_id)
    now = timezone.now()
    state = request.GET.get("status", "")
    images = images_with_state(project=project, now=now)
    if state in IMAGE_STATES:
        images = images_in_state(images, state=state, now=now)
    else:
        state = ""
    name = request.GET.get("name", "").strip()[:NAME_SEARCH_MAX]
    images = images_named_like(images, text=name)
    page = Paginator(images, IMAGES_PER_PAGE).get_page(request.GET.get("page"))
    is_admin = has_role(user=request.user, project=project, role=ADMIN)
    may_review = has_role(user=request.user, project=project, role=REVIEWER)
    context: dict[str, Any] = {
        "project": project,
        "role": role_in(user=request.user, project=project),
        "is_admin": is_admin,
        "may_review": may_review,
        "members": project_members(project=project),
        "categories": categories_with_masks(project=project),
        "roles": Membership.Role.choices,
        "page": page,
        "state": state,
        "name": name,
        "image_states": IMAGE_STATES,
        "state_counts": image_state_counts(project=project, now=now),
        "annotators": _annotator_figures(request, project, may_review=may_review),
        "stats_days": STATS_DAYS,
        "review_pending": review_pending_masks(project=project).count() if may_review else None,
        "sent_back": masks_sent_back(
            project=project, annotator_id=None if may_review else request.user.pk
        ).count(),
        "export_formats": EXPORT_FORMATS,
        "upload_rejections": upload_rejections or [],
        "coco_problems": coco_problems,
    }
    if may_review:
        context["stage_figures"] = project_stage_figures(project=project)
        context["stages"] = Stage.choices
    if is_admin:
        context.update(jobs_table_context(project=project))
        panel = automatic_panel_context(project=project)
        panel.pop("project")  # keep the one annotated with the counts
        context.update(panel)
        if project.stage == Stage.SEMI_AUTOMATIC:
            context["prefill_settings"] = prefill_settings_resolved(project=project)
    return render(request, "annotation/project_detail.html", context, status=status)


@require_GET
@login_required
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    return project_page(request, project_id)


def _rejections(exc: ImageRejected) -> list[dict[str, str]]:
    details = exc.details
    if isinstance(details, dict) and isinstance(details.get("rejected"), list):
        return [
            {"file_name": str(item.get("file_name", "")), "reason": str(item.get("reason", ""))}
            for item in details["rejected"]
            if isinstance(item, dict)
        ]
    return [{"file_name": "", "reason": exc.message}]


@require_POST
@login_required
def project_upload(request: HttpRequest, project_id: int) -> HttpResponse:
    """Import the uploaded files all-or-nothing; on rejection show every file's reason."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    uploads = request.FILES.getlist("files")
    if not uploads:
        messages.error(request, "Choose at least one image file to upload.")
        return redirect("project-detail", project_id=project.pk)
    files = [(upload.name or "", upload.read()) for upload in uploads]
    try:
        outcomes = images_ingest_batch(project=project, files=files)
    except ImageRejected as exc:
        return project_page(request, project.pk, upload_rejections=_rejections(exc), status=400)
    imported = sum(1 for outcome in outcomes if outcome.status == "imported")
    duplicates = len(outcomes) - imported
    messages.success(
        request,
        f"Imported {imported} image{'s' if imported != 1 else ''}"
        + (f", {duplicates} already in the project." if duplicates else "."),
    )
    return redirect("project-detail", project_id=project.pk)


def _posted_ids(values: list[str]) -> list[int] | None:
    """The ticked category ids (None when none is ticked: every mask); a value that is not an
    id is passed on as -1 so that the export refuses it by name."""
    ids = [id_from_query(value) for value in values]
    return [-1 if i is None else i for i in ids] or None


@require_POST
@login_required
def project_export(request: HttpRequest, project_id: int) -> HttpResponse:
    """Start a COCO or SA-1B export of the accepted masks (the reviewed ones only when the box
    is ticked); the jobs table shows its progress."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    fmt = request.POST.get("format", "")
    if fmt not in EXPORT_FORMATS:
        messages.error(request, f"Unknown export format {fmt!r}.")
        return redirect("project-detail", project_id=project.pk)
    try:
        job = export_start(
            project=project,
            fmt=fmt,
            user=acting_user(request.user),
            reviewed=request.POST.get("reviewed") == "1",
            categories=_posted_ids(request.POST.getlist("categories")),
        )
    except DomainError as exc:
        messages.error(request, f"Export refused: {exc.message}")
    else:
        messages.success(request, f"{EXPORT_FORMATS[fmt]} export started (job #{job.pk}).")
    return HttpResponseRedirect(reverse("project-detail", args=[project.pk]) + "#jobs")


@require_POST
@login_required
def project_stage_view(request: HttpRequest, project_id: int) -> HttpResponse:
    """Move the project to the posted stage (admins); entering semi-automatic prefills."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    try:
        change = project_stage_change(
            project=project, stage=request.POST.get("stage", ""), user=acting_user(request.user)
        )
    except DomainError as exc:
        messages.error(request, f"Stage not changed: {exc.message}")
    else:
        if change.previous == change.project.stage:
            messages.info(request, f"The project is {change.project.get_stage_display()} already.")
        else:
            note = ""
            if change.prefill_job is not None:
                job = change.prefill_job
                note = f" Prefill run #{job.pk} queued over {job.progress_total} todo image(s)."
            messages.success(
                request, f"Stage changed to {change.project.get_stage_display()}.{note}"
            )
    return HttpResponseRedirect(reverse("project-detail", args=[project.pk]) + "#stage")


@require_POST
@login_required
def project_prefill_view(request: HttpRequest, project_id: int) -> HttpResponse:
    """Prefill the todo images that no prefill run has covered yet (e.g. new uploads)."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    try:
        job = prefill_start(project=project, user=acting_user(request.user))
    except DomainError as exc:
        messages.error(request, f"Prefill not started: {exc.message}")
    else:
        messages.success(
            request, f"Prefill run #{job.pk} queued over {job.progress_total} image(s)."
        )
    return HttpResponseRedirect(reverse("project-detail", args=[project.pk]) + "#stage")
