"""The project page's member forms (admins): add a member or change a role by username, remove a
member (annotation.services.projects, as the API does). The last admin cannot be demoted or
removed: the page says so."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation.errors import DomainError
from annotation.ids import id_from_query
from annotation.models import Membership
from annotation.permissions import require_admin
from annotation.selectors.projects import project_get_for_user
from annotation.services.projects import membership_remove, membership_set


def _back(project_id: int) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("project-detail", args=[project_id]) + "#members")


@require_POST
@login_required
def project_member_set(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    username = request.POST.get("username", "").strip()
    role = request.POST.get("role", "")
    user = User.objects.filter(username=username, is_active=True).first() if username else None
    if user is None:
        messages.error(request, f"No active user is named {username!r}.")
        return _back(project.pk)
    was = Membership.objects.filter(project=project, user=user).values_list("role", flat=True)
    before = was.first()
    try:
        membership = membership_set(project=project, user=user, role=role)
    except DomainError as exc:
        messages.error(request, f"Not changed: {exc.message}")
        return _back(project.pk)
    label = membership.get_role_display().lower()
    if before is None:
        messages.success(request, f"{username} is now a member, as {label}.")
    elif before != role:
        messages.success(request, f"{username} is now {label}.")
    return _back(project.pk)


@require_POST
@login_required
def project_member_remove(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    user_id = id_from_query(request.POST.get("user_id"))
    membership = (
        Membership.objects.select_related("user").filter(project=project, user_id=user_id).first()
        if user_id is not None
        else None
    )
    if membership is None:
        messages.error(request, "That user is not a member of this project.")
        return _back(project.pk)
    try:
        membership_remove(project=project, user=membership.user)
    except DomainError as exc:
        messages.error(request, f"Not removed: {exc.message}")
    else:
        messages.success(request, f"{membership.user.get_username()} is no longer a member.")
    return _back(project.pk)
