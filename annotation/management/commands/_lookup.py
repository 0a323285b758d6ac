"""Name → row lookups shared by the management commands; unknown names become CommandError."""

from django.contrib.auth.models import User
from django.core.management.base import CommandError

from annotation.models import Project
from annotation.selectors.projects import project_get_by_name


def project_from_ref(ref: str) -> Project:
    """The project named ``ref``, else the project whose id is ``ref``."""
    try:
        return project_get_by_name(name=ref)
    except Project.DoesNotExist:
        pass
    if ref.isdigit():
        project = Project.objects.filter(pk=int(ref)).first()
        if project is not None:
            return project
    raise CommandError(f"unknown project {ref!r}: give an existing project's name or id")


def user_from_name(username: str) -> User:
    user = User.objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"unknown user {username!r}")
    return user
