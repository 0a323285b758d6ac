"""``manage.py promote_version PROJECT VERSION_ID [--reason TEXT]``."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref
from engine.selectors import model_version_for_project
from training.services.promotion import version_promote


class Command(BaseCommand):
    help = (
        "Deploy a model version of a project (atomically, recorded in its deployment history); "
        "every web process and worker serves it from its next request and its embeddings are "
        "queued, images in progress first."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("version_id", type=int, help="the model version's id")
        parser.add_argument("--reason", default="", help="why (kept in the history)")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        version = model_version_for_project(project=project, version_id=options["version_id"])
        if version is None:
            raise CommandError(
                f"no model version {options['version_id']} in project {project.name!r}"
            )
        previous = project.deployed_version_id
        try:
            version_promote(version=version, user=None, reason=options["reason"])
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"model version {version.pk} is live in project {project.name!r} (was {previous})"
        )
