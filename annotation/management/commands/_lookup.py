"""Name → row lookups shared by the management commands (unknown names become CommandError),
and the progress bar of the deletion commands."""

import sys
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

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


Progress = Callable[[int, int], None]


def purge_with_bar(
    command: BaseCommand,
    purge: Callable[..., dict[str, Any] | None],
    *,
    job_id: int,
    hidden: bool,
) -> dict[str, int]:
    """Run a deletion job's purge in this process behind a tqdm bar on stderr (files done of
    total); the blob counts of its result."""
    stream = getattr(command.stderr, "_out", sys.stderr)  # tqdm redraws one line with "\r"
    with tqdm(unit="file", file=stream, disable=hidden, dynamic_ncols=True) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = purge(job_id=job_id, progress=progress) or {}
    return dict(result.get("blobs", {}))
