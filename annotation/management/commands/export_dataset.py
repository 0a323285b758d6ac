"""``manage.py export_dataset PROJECT --format coco|sa1b [filters] [--job ID] [--out PATH|s3://...]``.

Creates the export Job and runs it in this process (not through the broker) with a progress
bar on stderr, then prints where every file went. Bad arguments exit non-zero, creating nothing.
"""

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref, user_from_name
from annotation.models import Mask, Project, Stage
from annotation.selectors.categories import category_named, project_categories
from annotation.services.export import FORMATS, export_run, export_start
from engine.services.jobs import job_fail
from storage.blobs import get_blob_store, open_location


class Command(BaseCommand):
    help = (
        "Export a project's masks as COCO (RLE segmentations) or SA-1B tar shards. The files go "
        "to the blob store under exports/<job id>/ and, with --out, to a folder or S3 prefix."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("--format", dest="fmt", required=True, choices=FORMATS)
        parser.add_argument("--status", default=Mask.Status.ACCEPTED, choices=Mask.Status.values)
        parser.add_argument("--stage", choices=Stage.values, help="only masks of this stage")
        parser.add_argument("--source", choices=Mask.Source.values, help="only this source")
        parser.add_argument(
            "--job", type=int, metavar="ID", help="only the masks of this automatic/prefill run"
        )
        parser.add_argument(
            "--reviewed",
            action="store_true",
            help="only masks a reviewer approved or fixed (QA-passed)",
        )
        parser.add_argument(
            "--category",
            action="append",
            metavar="NAME",
            help="only the masks of this category (repeat for several)",
        )
        parser.add_argument("--out", metavar="PATH_OR_S3_URL", help="also write here")
        parser.add_argument("--shard-size", type=int, help="SA-1B: images per tar shard")
        parser.add_argument(
            "--no-images", action="store_true", help="SA-1B: leave the image files out"
        )
        parser.add_argument("--user", metavar="USERNAME", help="record the job as this user's")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        user = user_from_name(options["user"]) if options["user"] else None
        try:
            job = export_start(
                project=project,
                fmt=options["fmt"],
                user=user,
                status=options["status"],
                stage=options["stage"],
                source=options["source"],
                out=options["out"],
                shard_size=options["shard_size"],
                include_images=not options["no_images"],
                job_id=options["job"],
                reviewed=options["reviewed"],
                categories=_category_ids(project, options["category"]),
                enqueue=False,
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc

        # tqdm redraws one line with "\r"; Django's OutputWrapper would add a newline per write.
        stream = getattr(self.stderr, "_out", sys.stderr)
        bar = tqdm(unit="mask", file=stream, disable=options["no_progress"], dynamic_ncols=True)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            result = export_run(job_id=job.pk, on_progress=progress)
        except Exception as exc:
            job_fail(job_id=job.pk, error=exc)
            raise CommandError(f"export job #{job.pk} failed: {exc}") from exc
        finally:
            bar.close()
        if result is None:
            raise CommandError(f"export job #{job.pk} was cancelled")

        self.stdout.write(
            f"exported {result['annotations']} masks of {result['images']} images as "
            f"{result['format']} (job #{job.pk})"
        )
        store = get_blob_store().location.rstrip("/")
        out = open_location(result["out"]).location.rstrip("/") if result["out"] else None
        for file in result["files"]:
            self.stdout.write(f"  {store}/{file['key']} ({file['bytes']} bytes)")
            if out is not None:
                self.stdout.write(f"  {out}/{file['name']}")


def _category_ids(project: Project, names: list[str] | None) -> list[int] | None:
    """The ids of the project's categories named on the command line (any case)."""
    if not names:
        return None
    found = {name: category_named(project=project, name=name) for name in names}
    unknown = [name for name, category in found.items() if category is None]
    if unknown:
        known = ", ".join(c.name for c in project_categories(project=project)) or "none"
        raise CommandError(
            f"project {project.name!r} has no category {', '.join(map(repr, unknown))} "
            f"(its categories: {known})"
        )
    return sorted({category.pk for category in found.values() if category is not None})
