"""Job page (status, progress, files, cancel) and the self-refreshing jobs table of a project."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.permissions import require_admin
from annotation.selectors.projects import (
    job_get_for_user,
    job_may_manage,
    job_shown_fields,
    project_get_for_user,
)
from annotation.web.projects import jobs_table_context
from engine.api import job_files_for_display
from engine.services.jobs import job_cancel


@require_GET
@login_required
def project_jobs_table(request: HttpRequest, project_id: int) -> HttpResponse:
    """The jobs table alone; the project page swaps it in every few seconds while a job runs."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    return render(request, "annotation/_jobs_table.html", jobs_table_context(project=project))


@require_GET
@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """The job page; with ``?partial=1`` only its status panel (for the page's own refresh)."""
    job = job_get_for_user(user=request.user, job_id=job_id)
    may_manage = job_may_manage(user=request.user, job=job)
    params, _result = job_shown_fields(job=job, may_manage=may_manage)
    context = {
        "job": job,
        "params": params,
        "may_manage": may_manage,
        "files": job_files_for_display(job) if may_manage else [],
    }
    template = "annotation/_job_status.html" if request.GET.get("partial") else None
    return render(request, template or "annotation/job_detail.html", context)


@require_POST
@login_required
def job_cancel_view(request: HttpRequest, job_id: int) -> HttpResponse:
    job = job_get_for_user(user=request.user, job_id=job_id)
    if job.project is not None:
        require_admin(user=request.user, project=job.project)
    job = job_cancel(job_id=job.pk)
    messages.info(request, f"Job #{job.pk} is {job.get_status_display().lower()}.")
    return redirect("job-detail", job_id=job.pk)
