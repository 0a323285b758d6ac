"""``manage.py set_stage PROJECT STAGE --user USERNAME``: move a project to another stage."""

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref, user_from_name
from annotation.models import Stage
from annotation.services.projects import project_stage_change


class Command(BaseCommand):
    help = (
        "Move a project between assisted_manual, semi_automatic and fully_automatic. The change "
        "is made and recorded as --user (an admin of the project, or a superuser). Entering "
        "semi_automatic needs a deployed model version and queues a prefill run."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        # No argparse choices: the service names the stages in its own error message.
        parser.add_argument("stage", help=", ".join(Stage.values))
        parser.add_argument(
            "--user", metavar="USERNAME", required=True, help="the admin making the change"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        user = user_from_name(options["user"])
        try:
            change = project_stage_change(project=project, stage=options["stage"], user=user)
        except PermissionDenied as exc:
            raise CommandError(f"{user.username}: {exc}") from exc
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        if change.previous == change.project.stage:
            self.stdout.write(f"project {project.name!r} is {change.project.stage} already")
            return
        self.stdout.write(f"project {project.name!r}: {change.previous} -> {change.project.stage}")
        if change.prefill_job is not None:
            job = change.prefill_job
            self.stdout.write(
                f"prefill run queued: job #{job.pk} over {job.progress_total} todo image(s)"
            )
        elif change.project.stage == Stage.SEMI_AUTOMATIC:
            self.stdout.write("no todo image needs prefilling")
