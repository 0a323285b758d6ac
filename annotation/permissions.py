"""Who may do what, in one place.

Roles are ordered annotator < reviewer < admin. Superusers act as admins of every project.
Users see only the projects they are members of: a project they cannot see answers 404 (its
existence is not revealed); a visible project where their role is too low answers 403.
Creating projects is for superusers and staff.
"""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from annotation.models import Membership, Project

ANNOTATOR = Membership.Role.ANNOTATOR.value
REVIEWER = Membership.Role.REVIEWER.value
ADMIN = Membership.Role.ADMIN.value

ROLE_RANK: dict[str, int] = {ANNOTATOR: 1, REVIEWER: 2, ADMIN: 3}

AnyUser = AbstractBaseUser | AnonymousUser


def is_superuser(user: AnyUser) -> bool:
    return bool(user.is_authenticated and getattr(user, "is_superuser", False))


def can_create_projects(user: AnyUser) -> bool:
    """Superusers and staff create projects (and become their first admin)."""
    return bool(
        user.is_authenticated
        and (getattr(user, "is_superuser", False) or getattr(user, "is_staff", False))
    )


def role_in(*, user: AnyUser, project: Project) -> str | None:
    """The user's effective role in ``project``: "admin" for superusers, None for outsiders."""
    if not user.is_authenticated:
        return None
    if is_superuser(user):
        return ADMIN
    return (
        Membership.objects.filter(user_id=user.pk, project_id=project.pk)
        .values_list("role", flat=True)
        .first()
    )


def acting_user(user: AnyUser) -> User:
    """The logged-in user as a ``User`` (views behind a login check); 403 for anyone else."""
    if not isinstance(user, User) or not user.is_authenticated:
        raise PermissionDenied("log in first")
    return user


def has_role(*, user: AnyUser, project: Project, role: str) -> bool:
    """True when the user's role in ``project`` is ``role`` or higher."""
    actual = role_in(user=user, project=project)
    return actual is not None and ROLE_RANK[actual] >= ROLE_RANK[role]


def require_role(*, user: AnyUser, project: Project, role: str) -> None:
    """Raise ``PermissionDenied`` (403) unless the user has at least ``role`` in ``project``.

    Callers first fetch the project through a visibility-checking selector, so an outsider
    has already been answered 404 before this runs.
    """
    if not has_role(user=user, project=project, role=role):
        raise PermissionDenied(f"this needs the {role} role in project {project.name!r}")


def require_admin(*, user: AnyUser, project: Project) -> None:
    """Importing images, exporting, managing models and members: project admins only."""
    require_role(user=user, project=project, role=ADMIN)


class CanCreateProjects(BasePermission):
    """DRF permission: POST (create) needs staff or superuser; reads need only a login."""

    message = "only staff users create projects"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if request.method == "POST":
            return can_create_projects(request.user)
        return True
