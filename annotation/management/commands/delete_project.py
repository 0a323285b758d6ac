"""``manage.py delete_project PROJECT --yes``: delete a project with everything in it and its
files (annotation.services.project_deletion). Without ``--yes`` it only says what would go.
The files are deleted in this process with a progress bar."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import DomainError
from annotation.management.commands._lookup import (
    project_from_ref,
    purge_with_bar,
    user_from_name,
)
from annotation.models import Image, Mask
from annotation.services.project_deletion import deleted_project_purge, project_delete
from engine.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Delete a project with its images, masks, model versions, rounds, jobs and files. "
        "Cannot be undone: without --yes, only says what would be deleted."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("--yes", action="store_true", help="delete it (default: list only)")
        parser.add_argument("--user", metavar="USERNAME", help="record the job as this user's")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        user = user_from_name(options["user"]) if options["user"] else None
        if not options["yes"]:
            images = Image.objects.filter(project=project).count()
            masks = Mask.objects.filter(project=project).count()
            versions = ModelVersion.objects.filter(project=project).count()
            self.stdout.write(
                f"would delete project {project.name!r} (id {project.pk}): {images} images, "
                f"{masks} masks, {versions} model versions; run again with --yes to do it"
            )
            return
        try:
            deleted = project_delete(
                project=project, confirm=project.name, user=user, enqueue=False
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"deleted project {deleted.name!r}: {deleted.images} images, {deleted.masks} masks, "
            f"{deleted.versions} model versions (job {deleted.job.pk})"
        )
        blobs = purge_with_bar(
            self, deleted_project_purge, job_id=deleted.job.pk, hidden=options["no_progress"]
        )
        self.stdout.write(
            f"deleted {blobs.get('deleted', 0)} image files, {blobs.get('embeddings_deleted', 0)}"
            f" embeddings, {blobs.get('model_files_deleted', 0)} model files and "
            f"{blobs.get('other_files_deleted', 0)} other files; kept {blobs.get('kept', 0)} "
            "image files other projects have"
        )
