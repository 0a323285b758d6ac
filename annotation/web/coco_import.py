"""The project page's "Import masks (COCO)" form (admins): annotation.services.coco_import on
the uploaded file, as the API does; the problems of a refused file listed on the page. And the
import job page's "Delete its masks" form (annotation.services.coco_import_undo)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation.errors import DomainError
from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import job_get_for_user, project_get_for_user
from annotation.services.coco_import import (
    CocoImportRefused,
    CocoUploadTooLarge,
    coco_import_upload,
)
from annotation.services.coco_import_undo import coco_import_undo
from annotation.web.projects import project_page


@require_POST
@login_required
def project_import_coco(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    upload = request.FILES.get("annotations")
    back = HttpResponseRedirect(reverse("project-detail", args=[project.pk]) + "#coco-import")
    if upload is None:
        messages.error(request, "Choose a COCO annotation file (JSON) to import.")
        return back
    try:
        summary = coco_import_upload(
            project=project,
            upload=upload,
            user=acting_user(request.user),
            skip_missing_images=request.POST.get("skip_missing_images") == "on",
            keep_categories=request.POST.get("no_categories") != "on",
        )
    except CocoUploadTooLarge as exc:
        messages.error(request, exc.message)
        return back
    except CocoImportRefused as exc:
        details = exc.details if isinstance(exc.details, dict) else {}
        problems = {
            "file": upload.name,
            "errors": [str(e) for e in details.get("errors", [exc.message])],
            "total": int(details.get("total", 1)),
        }
        return project_page(request, project.pk, coco_problems=problems, status=400)
    line = summary.line
    messages.success(request, f"{line[0].upper()}{line[1:]} (job #{summary.job_id}).")
    return back


@require_POST
@login_required
def job_undo_import_view(request: HttpRequest, job_id: int) -> HttpResponse:
    job = job_get_for_user(user=request.user, job_id=job_id)
    if job.project is None:  # imports always have a project; anything else is not one
        messages.error(request, f"Job #{job.pk} is not an import.")
        return redirect("job-detail", job_id=job.pk)
    require_admin(user=request.user, project=job.project)
    if request.POST.get("confirm") != "on":
        messages.error(request, "Tick the box to confirm: the masks cannot be brought back.")
        return redirect("job-detail", job_id=job.pk)
    try:
        undone = coco_import_undo(
            project=job.project, job_id=job.pk, user=acting_user(request.user)
        )
    except DomainError as exc:
        messages.error(request, f"Not undone: {exc.message}")
    else:
        messages.success(request, f"Deleted {undone.deleted} masks of import #{job.pk}.")
    return redirect("job-detail", job_id=job.pk)
