"""The project page's image selection (the tiles' boxes): what the selection form sent, and
its "Reopen selected" button (reviewers: done or skipped images back to todo). Its "Remove
selected images" button is annotation.web.deletion's."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation.errors import DomainError
from annotation.ids import id_from_query
from annotation.models import Project
from annotation.permissions import REVIEWER, require_role
from annotation.selectors.projects import project_get_for_user
from annotation.services.leases import images_reopen


def selection_back(request: HttpRequest, project: Project) -> str:
    """The project page as it was (its filter and page), at the image grid."""
    back = reverse("project-detail", args=[project.pk])
    query = request.POST.get("back", "")
    if query.startswith("?") and "\n" not in query:
        back += query
    return back + "#images"


def selected_ids(request: HttpRequest, *, verb: str) -> list[int] | None:
    """The ticked image ids, or None after saying what is wrong (nothing ticked, not ids)."""
    raw = request.POST.getlist("image_ids")
    ids = [id_from_query(value) for value in raw]
    if not raw:
        messages.error(request, f"Select the images to {verb} first (the boxes on the tiles).")
        return None
    if any(image_id is None for image_id in ids):
        messages.error(request, "The selection holds something that is not an image id.")
        return None
    return [image_id for image_id in ids if image_id is not None]


@require_POST
@login_required
def project_images_reopen(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, role=REVIEWER)
    back = selection_back(request, project)
    ids = selected_ids(request, verb="reopen")
    if ids is None:
        return HttpResponseRedirect(back)
    try:
        count = images_reopen(project=project, image_ids=ids)
    except DomainError as exc:
        messages.error(request, f"Nothing reopened: {exc.message}")
    else:
        left = len(set(ids)) - count
        note = f" ({left} already to do)" if left else ""
        messages.success(
            request,
            f"Reopened {count} image{'s' if count != 1 else ''}{note}: "
            "“next image” hands them out again.",
        )
    return HttpResponseRedirect(back)
