"""``manage.py prefill_calibrate PROJECT [--set KEY=VALUE ...] [--max-images N]``."""

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref
from annotation.services.semi_automatic import prefill_calibrate
from engine.services.automatic.params import parse_assignments


class Command(BaseCommand):
    help = (
        "Measure prefill on the project's frozen validation split: the deployed model with the "
        "project's prefill settings (plus --set overrides, not stored) against the masks "
        "annotators accepted there. Prints precision and recall at IoU 0.5 and 0.75 as JSON."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument(
            "--set",
            dest="assignments",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a generator setting to try, e.g. pred_iou_thresh=0.9 (repeatable)",
        )
        parser.add_argument("--max-images", type=int, help="the first N validation images only")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        try:
            result = prefill_calibrate(
                project=project,
                overrides=parse_assignments(options["assignments"]),
                max_images=options["max_images"],
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps(result, indent=2, sort_keys=True))
