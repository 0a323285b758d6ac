"""``manage.py import_images PROJECT SOURCE``: a folder or ``s3://bucket/prefix``.

Shows a progress bar on stderr, then prints ``imported N, duplicate N, rejected N`` and each
rejected file with its reason. Exits non-zero when anything was rejected.
"""

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref, user_from_name
from annotation.services.ingest import IngestOutcome, images_import
from storage.blobs import BlobError


class Command(BaseCommand):
    help = (
        "Import every image of a folder (recursively) or an S3 prefix into a project. "
        "Exits non-zero when a file was rejected."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("source", help="a folder or s3://bucket/prefix")
        parser.add_argument("--user", metavar="USERNAME", help="record the job as this user's")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        user = user_from_name(options["user"]) if options["user"] else None
        # tqdm redraws one line with "\r"; Django's OutputWrapper would add a newline per write.
        stream = getattr(self.stderr, "_out", sys.stderr)
        bars: list[tqdm[Any]] = []  # made at the first file: a bad source prints its error alone

        def progress(done: int, total: int, outcome: IngestOutcome) -> None:
            if not bars:
                bars.append(
                    tqdm(
                        unit="img",
                        file=stream,
                        disable=options["no_progress"],
                        dynamic_ncols=True,
                        total=total,
                    )
                )
            bar = bars[0]
            if bar.total != total:
                bar.total = total
            bar.update(1)

        try:
            summary = images_import(
                project=project, source=options["source"], user=user, progress=progress
            )
        except (DomainError, BlobError) as exc:
            raise CommandError(str(getattr(exc, "message", exc))) from exc
        finally:
            for bar in bars:
                bar.close()
        self.stdout.write(summary.line)
        if summary.skipped:
            self.stdout.write(f"skipped {summary.skipped} hidden or non-regular entries")
        for name, reason in summary.rejected:
            self.stdout.write(f"  {name}: {reason}")
        if summary.rejected:
            raise CommandError(
                f"{len(summary.rejected)} file(s) rejected (job #{summary.job_id}); see above"
            )
