"""``manage.py rollback_version PROJECT [--reason TEXT]``."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref
from training.services.promotion import version_rollback


class Command(BaseCommand):
    help = "Deploy again the model version that the live one replaced when it was promoted."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("--reason", default="", help="why (kept in the history)")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        previous = project.deployed_version_id
        try:
            version = version_rollback(project=project, user=None, reason=options["reason"])
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"rolled back project {project.name!r}: model version {version.pk} is live "
            f"(was {previous})"
        )
