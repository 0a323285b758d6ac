"""``manage.py create_project NAME [--description TEXT] [--stage STAGE] [--admin USERNAME]``."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import DomainError
from annotation.management.commands._lookup import user_from_name
from annotation.models import Stage
from annotation.services.projects import project_create


class Command(BaseCommand):
    help = "Create a project. --admin makes an existing user its first admin."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="unique project name")
        parser.add_argument("--description", default="", help="free text shown in the UI")
        parser.add_argument("--stage", choices=Stage.values, default=Stage.ASSISTED_MANUAL.value)
        parser.add_argument("--admin", metavar="USERNAME", help="existing user to make admin")

    def handle(self, *args: Any, **options: Any) -> None:
        creator = user_from_name(options["admin"]) if options["admin"] else None
        try:
            project = project_create(
                name=options["name"],
                description=options["description"],
                stage=options["stage"],
                creator=creator,
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        admin = f", admin {creator.username}" if creator is not None else ""
        self.stdout.write(f"created project {project.name!r} (id {project.pk}{admin})")
