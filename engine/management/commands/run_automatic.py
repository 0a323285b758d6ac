"""``manage.py run_automatic PROJECT [--images FILTER] [--set key=value ...] [--wait]``.

Also ``--resume JOB`` / ``--cancel JOB`` for an existing run. The run itself is done by the
``gpu`` workers (``celery -A config worker -Q gpu``); ``--wait`` follows its progress.
"""

import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref, user_from_name
from engine.models import Job
from engine.services.automatic import automatic_cancel, automatic_resume, automatic_start
from engine.services.automatic.params import parse_assignments
from engine.services.automatic.selectors import (
    IMAGE_FILTERS,
    automatic_image_filter,
    automatic_run_images,
)

POLL_S = 1.0


class Command(BaseCommand):
    help = (
        "Start a fully automatic run of a project's deployed model over its images (SA-1B "
        "settings by default: 32x32 grid plus 2x2 and 4x4 crops, IoU > 0.88, stability >= "
        "0.95, NMS, regions under 100 px cleaned, masks covering 95 percent of the image or more "
        "dropped), or cancel / resume one. gpu workers do the work."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("--images", default="all", help=f"which images: {IMAGE_FILTERS}")
        parser.add_argument(
            "--set",
            dest="assignments",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a generator setting, e.g. --set points_per_side=16 --set crop_n_layers=0 "
            "(values as JSON; none for null)",
        )
        parser.add_argument("--chunk", type=int, help="images per task")
        parser.add_argument("--in-flight", type=int, help="tasks queued at once")
        parser.add_argument("--user", help="the run's creator (a username)")
        parser.add_argument("--wait", action="store_true", help="follow the run to its end")
        parser.add_argument("--resume", type=int, metavar="JOB", help="resume run JOB")
        parser.add_argument(
            "--retry-failed", action="store_true", help="with --resume: retry failed images too"
        )
        parser.add_argument("--cancel", type=int, metavar="JOB", help="cancel run JOB")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        try:
            job = self._act(project, options)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"run {job.pk} ({job.kind}) in project {project.name!r}: {job.status}")
        if options["wait"] and not job.is_finished:
            job = self._follow(job)
        if job.is_finished:
            self._summary(job)
            if job.status == Job.Status.FAILED:
                raise CommandError(f"run {job.pk} failed: {job.error}")

    def _act(self, project: Any, options: dict[str, Any]) -> Job:
        for flag in ("resume", "cancel"):
            job_id = options[flag]
            if job_id is None:
                continue
            if not Job.objects.filter(pk=job_id, project=project).exists():
                raise CommandError(f"no run {job_id} in project {project.name!r}")
            if flag == "cancel":
                return automatic_cancel(job_id=job_id)
            return automatic_resume(job_id=job_id, retry_failed=options["retry_failed"])
        try:
            image_ids = automatic_image_filter(project=project, spec=options["images"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        user = user_from_name(options["user"]) if options["user"] else None
        return automatic_start(
            project=project,
            user=user,
            params=parse_assignments(options["assignments"]),
            image_ids=image_ids,
            chunk=options["chunk"],
            in_flight=options["in_flight"],
        )

    def _follow(self, job: Job) -> Job:
        with tqdm(total=job.progress_total or 0, unit="img", desc=f"run {job.pk}") as bar:
            while True:
                job.refresh_from_db()
                bar.total = job.progress_total or bar.total
                bar.update(max(0, job.progress_done - bar.n))
                rate = (job.result or {}).get("images_per_s")
                bar.set_postfix_str(f"{job.result.get('failed', 0)} failed, {rate or 0:.2f} img/s")
                if job.is_finished:
                    return job
                time.sleep(POLL_S)

    def _summary(self, job: Job) -> None:
        figures = automatic_run_images(job=job)
        self.stdout.write(
            f"{job.status}: {figures.done} images done, {figures.failed} failed, "
            f"{figures.pending} pending, {figures.masks} masks"
        )
        if figures.mean_timings:
            split = ", ".join(f"{k} {v:.3f}" for k, v in figures.mean_timings.items())
            self.stdout.write(f"seconds per image: {split}")
        for entry in figures.failed_images[:20]:
            self.stdout.write(f"  image {entry['image']}: {entry['error']}")
