"""``manage.py remove_images PROJECT [ID ...] [--file-name NAME ...] --yes``: take images out of
a project with their masks, embeddings and (unless another project has the same bytes) their
files (annotation.services.image_removal).

Without ``--yes`` it only lists what would go. The files are deleted in this process with a
progress bar; a run cut short is finished by a worker (job recovery) or deletes nothing twice.
"""

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
from annotation.selectors.images import image_ids_named
from annotation.services.image_removal import images_remove, removed_images_purge


class Command(BaseCommand):
    help = (
        "Remove images from a project with their masks (every status), embeddings and files. "
        "Cannot be undone: without --yes, only lists what would be removed."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("ids", type=int, nargs="*", metavar="ID", help="image ids")
        parser.add_argument(
            "--file-name",
            action="append",
            default=[],
            metavar="NAME",
            help="the images stored under this file name (repeat for several)",
        )
        parser.add_argument("--yes", action="store_true", help="remove them (default: list only)")
        parser.add_argument("--user", metavar="USERNAME", help="record the job as this user's")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        user = user_from_name(options["user"]) if options["user"] else None
        ids = list(options["ids"])
        if options["file_name"]:
            named = image_ids_named(project=project, file_names=options["file_name"])
            unknown = [name for name in options["file_name"] if name not in named]
            if unknown:
                raise CommandError(f"no image of project {project.name!r} is named {unknown}")
            ids += [image_id for found in named.values() for image_id in found]
        if not ids:
            raise CommandError("give image ids or --file-name NAME")
        ids = list(dict.fromkeys(ids))
        if not options["yes"]:
            self._preview(project.pk, ids)
            return
        try:
            removed = images_remove(project=project, image_ids=ids, user=user, enqueue=False)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"removed {removed.images} images and {removed.masks} masks (job {removed.job.pk})"
        )
        blobs = purge_with_bar(
            self, removed_images_purge, job_id=removed.job.pk, hidden=options["no_progress"]
        )
        self.stdout.write(
            f"deleted {blobs.get('deleted', 0)} image files and "
            f"{blobs.get('embeddings_deleted', 0)} embeddings; kept {blobs.get('kept', 0)} "
            "files other projects have"
        )

    def _preview(self, project_id: int, ids: list[int]) -> None:
        images = Image.objects.filter(project_id=project_id, pk__in=ids)
        found = {image.pk: image for image in images}
        missing = [image_id for image_id in ids if image_id not in found]
        if missing:
            raise CommandError(f"not images of this project: {missing[:20]}")
        masks = Mask.objects.filter(image_id__in=ids).count()
        for image_id in ids[:20]:
            image = found[image_id]
            self.stdout.write(f"  {image.pk}  {image.file_name or image.sha256}")
        if len(ids) > 20:
            self.stdout.write(f"  ... and {len(ids) - 20} more")
        self.stdout.write(
            f"would remove {len(ids)} images and {masks} masks; run again with --yes to do it"
        )
