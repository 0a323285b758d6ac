"""The project page's category forms (admins): add, rename or recolour, delete
(annotation.services.categories, as the API does). A category that masks carry is deleted only
when the form's confirmation box is ticked."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation.errors import DomainError
from annotation.ids import id_from_query
from annotation.models import Category, Project
from annotation.permissions import require_admin
from annotation.selectors.projects import project_get_for_user
from annotation.services.categories import category_create, category_delete, category_update


def _back(project_id: int) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("project-detail", args=[project_id]) + "#categories")


def _admin_project(request: HttpRequest, project_id: int) -> Project:
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    return project


def _posted_category(request: HttpRequest, project_id: int) -> tuple[Project, Category | None]:
    """The admin's project and the posted category of it (None, with the page's error message
    set, when it is not one: deleted meanwhile, or a forged id)."""
    project = _admin_project(request, project_id)
    category_id = id_from_query(request.POST.get("category_id"))
    category = (
        None
        if category_id is None
        else Category.objects.filter(project=project, pk=category_id).first()
    )
    if category is None:
        messages.error(request, "That category is not in this project any more.")
    return project, category


@require_POST
@login_required
def project_category_add(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _admin_project(request, project_id)
    color = request.POST.get("color") or None
    try:
        category = category_create(project=project, name=request.POST.get("name", ""), color=color)
    except DomainError as exc:
        messages.error(request, f"Not added: {exc.message}")
    else:
        messages.success(request, f"Category {category.name!r} added (COCO id {category.coco_id}).")
    return _back(project.pk)


@require_POST
@login_required
def project_category_update(request: HttpRequest, project_id: int) -> HttpResponse:
    project, category = _posted_category(request, project_id)
    if category is None:
        return _back(project.pk)
    try:
        updated = category_update(
            category=category,
            name=request.POST.get("name") or None,
            color=request.POST.get("color") or None,
        )
    except DomainError as exc:
        messages.error(request, f"Not changed: {exc.message}")
    else:
        messages.success(request, f"Category {updated.name!r} saved.")
    return _back(project.pk)


@require_POST
@login_required
def project_category_delete(request: HttpRequest, project_id: int) -> HttpResponse:
    project, category = _posted_category(request, project_id)
    if category is None:
        return _back(project.pk)
    try:
        used = category_delete(category=category, force=request.POST.get("force") == "on")
    except DomainError as exc:
        messages.error(request, f"Not deleted: {exc.message}")
    else:
        note = f"; {used} masks no longer have a category" if used else ""
        messages.success(request, f"Category {category.name!r} deleted{note}.")
    return _back(project.pk)
