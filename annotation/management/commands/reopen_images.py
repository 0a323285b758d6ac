"""``manage.py reopen_images PROJECT [ID ...] [--skipped] [--done]``: put done or skipped images
back to todo, where "next image" hands them out again (annotation.services.leases); their
masks are kept. ``--skipped`` / ``--done`` take every such image of the project."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref
from annotation.models import Image
from annotation.services.image_sets import MAX_IMAGES_PER_REQUEST
from annotation.services.leases import images_reopen


class Command(BaseCommand):
    help = "Put done or skipped images of a project back to todo (their masks are kept)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("ids", type=int, nargs="*", metavar="ID", help="image ids")
        parser.add_argument("--skipped", action="store_true", help="every skipped image")
        parser.add_argument("--done", action="store_true", help="every done image")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        ids = list(options["ids"])
        # The flags are named as the statuses they take (--skipped, --done).
        states = [status for status in (Image.Status.SKIPPED, Image.Status.DONE) if options[status]]
        if states:
            ids += Image.objects.filter(project=project, status__in=states).values_list(
                "pk", flat=True
            )
        if not ids:
            if states:
                self.stdout.write("no image to reopen")
                return
            raise CommandError("give image ids, --skipped or --done")
        ids = list(dict.fromkeys(ids))
        reopened = 0
        try:
            for start in range(0, len(ids), MAX_IMAGES_PER_REQUEST):
                chunk = ids[start : start + MAX_IMAGES_PER_REQUEST]
                reopened += images_reopen(project=project, image_ids=chunk)
        except DomainError as exc:
            raise CommandError(f"{exc.message} ({reopened} reopened before)") from exc
        self.stdout.write(f"reopened {reopened} images ({len(ids) - reopened} were already todo)")
