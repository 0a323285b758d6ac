"""The project page's "Remove selected images" button (admins): the tiles' checkboxes name
the images (annotation.web.image_selection); annotation.services.image_removal takes them out,
as the API does. And its "Delete project" form (annotation.services.project_deletion)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation.errors import DomainError
from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import project_get_for_user
from annotation.services.image_removal import images_remove
from annotation.services.project_deletion import project_delete
from annotation.web.image_selection import selected_ids, selection_back


@require_POST
@login_required
def project_images_remove(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    back = selection_back(request, project)
    ids = selected_ids(request, verb="remove")
    if ids is None:
        return HttpResponseRedirect(back)
    if request.POST.get("confirm") != "on":
        messages.error(request, "Tick the box to confirm: removed images cannot be brought back.")
        return HttpResponseRedirect(back)
    try:
        removed = images_remove(project=project, image_ids=ids, user=acting_user(request.user))
    except DomainError as exc:
        messages.error(request, f"Nothing removed: {exc.message}")
    else:
        messages.success(
            request,
            f"Removed {removed.images} image{'s' if removed.images != 1 else ''} and "
            f"{removed.masks} mask{'s' if removed.masks != 1 else ''}; their files are being "
            f"deleted (job #{removed.job.pk}).",
        )
    return HttpResponseRedirect(back)


@require_POST
@login_required
def project_delete_view(request: HttpRequest, project_id: int) -> HttpResponse:
    """The project page's "Delete project" form: the admin types the project's name."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    try:
        deleted = project_delete(
            project=project, confirm=request.POST.get("confirm", ""), user=acting_user(request.user)
        )
    except DomainError as exc:
        messages.error(request, f"Not deleted: {exc.message}")
        return HttpResponseRedirect(
            reverse("project-detail", args=[project.pk]) + "#delete-project"
        )
    messages.success(
        request,
        f"Project {deleted.name!r} deleted ({deleted.images} images, {deleted.masks} masks, "
        f"{deleted.versions} model versions); its files are being deleted (job #{deleted.job.pk}).",
    )
    return HttpResponseRedirect(reverse("project-list"))
