"""``manage.py categories PROJECT [--add NAME ...] [--delete NAME ...] [--force]``: list,
add or delete a project's categories (optional class labels of masks)."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref
from annotation.models import Category, Project
from annotation.selectors.categories import categories_with_masks, category_named
from annotation.services.categories import category_create, category_delete


class Command(BaseCommand):
    help = (
        "List a project's categories (COCO id, name, colour, accepted masks); --add and "
        "--delete change them first, all or nothing."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument(
            "--add", nargs="+", default=[], metavar="NAME", help="add categories, in this order"
        )
        parser.add_argument(
            "--delete", nargs="+", default=[], metavar="NAME", help="delete categories (any case)"
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="delete categories that masks carry (the masks are left without one)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        try:
            with transaction.atomic():
                for name in options["delete"]:
                    used = category_delete(category=_named(project, name), force=options["force"])
                    self.stdout.write(f"deleted {name!r} ({used} masks left without a category)")
                for name in options["add"]:
                    added = category_create(project=project, name=name)
                    self.stdout.write(f"added {added.name!r} (COCO id {added.coco_id})")
        except DomainError as exc:
            raise CommandError(f"{exc.message}; nothing changed") from exc
        rows = categories_with_masks(project=project)
        if not rows:
            self.stdout.write(f"project {project.name!r} has no categories (class-agnostic)")
        for row, masks in rows:
            self.stdout.write(f"{row.coco_id:>5}  {row.name}  {row.color}  {masks} masks")


def _named(project: Project, name: str) -> Category:
    found = category_named(project=project, name=name)
    if found is None:
        raise CommandError(f"project {project.name!r} has no category {name!r}; nothing changed")
    return found
