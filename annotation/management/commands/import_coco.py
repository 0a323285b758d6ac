"""``manage.py import_coco PROJECT ANNOTATIONS.json``: masks from a COCO file onto the
project's images (annotation.services.coco_import); ``--undo JOB_ID`` takes an import back.

Checks the whole file first: anything wrong is listed and nothing is imported (exit 1).
Then shows a progress bar (images) and prints ``imported N masks onto N images, ...``.
"""

import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref, user_from_name
from annotation.services.coco_import import coco_import
from annotation.services.coco_import_undo import coco_import_undo


class Command(BaseCommand):
    help = (
        "Import the masks of a COCO annotation file (RLE or polygons) onto the project's "
        "images, matched by file name, as accepted masks of source 'imported'."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("annotations", type=Path, nargs="?", help="a COCO JSON file")
        parser.add_argument(
            "--undo",
            type=int,
            metavar="JOB_ID",
            help="instead: delete every mask that import job JOB_ID created",
        )
        parser.add_argument(
            "--skip-missing-images",
            action="store_true",
            help="leave out the file's images that are not in the project (default: refuse)",
        )
        parser.add_argument(
            "--no-categories",
            action="store_true",
            help="import the masks without a category (default: the file's categories, "
            "created in the project when missing)",
        )
        parser.add_argument("--user", metavar="USERNAME", help="record the job as this user's")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        user = user_from_name(options["user"]) if options["user"] else None
        if (options["annotations"] is None) == (options["undo"] is None):
            raise CommandError("give a COCO file to import, or --undo JOB_ID (not both)")
        if options["undo"] is not None:
            try:
                undone = coco_import_undo(project=project, job_id=options["undo"], user=user)
            except DomainError as exc:
                raise CommandError(exc.message) from exc
            self.stdout.write(f"deleted {undone.deleted} masks of import job {undone.job_id}")
            return
        stream = getattr(self.stderr, "_out", sys.stderr)  # tqdm redraws one line with "\r"
        bars: list[tqdm[Any]] = []

        def progress(done: int, total: int) -> None:
            if not bars:
                bars.append(
                    tqdm(
                        unit="img",
                        file=stream,
                        total=total,
                        disable=options["no_progress"],
                        dynamic_ncols=True,
                    )
                )
            bars[0].update(1)

        try:
            summary = coco_import(
                project=project,
                path=options["annotations"],
                user=user,
                skip_missing_images=options["skip_missing_images"],
                keep_categories=not options["no_categories"],
                progress=progress,
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        finally:
            for bar in bars:
                bar.close()
        self.stdout.write(f"{summary.line} (job {summary.job_id})")
