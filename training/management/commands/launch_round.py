"""``manage.py launch_round PROJECT [--steps N] [--scope S] [--lr X] [--wait]``."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref, user_from_name
from training.loop.optim import SCOPES
from training.loop.trainer import TrainProgress
from training.services.round_run import round_run_here
from training.services.rounds import round_launch


class Command(BaseCommand):
    help = (
        "Launch a retrain round of a project from its deployed model version: snapshot the "
        "accepted masks and queue the training job on the gpu queue, or with --wait run it here "
        "with a progress bar (train, evaluate, register the new model version)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("--steps", type=int, help="optimizer steps (default: the project's)")
        parser.add_argument("--scope", choices=SCOPES, help="what trains")
        parser.add_argument("--lr", type=float, help="learning rate")
        parser.add_argument("--masks-per-image", type=int, dest="masks_per_image")
        parser.add_argument(
            "--augment",
            action="store_true",
            default=None,
            help="train on images turned by random 90-degree rotations and mirrors (scope full)",
        )
        parser.add_argument("--user", help="record the round as launched by this user")
        parser.add_argument(
            "--wait", action="store_true", help="run the round in this process, to the end"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        user = user_from_name(options["user"]) if options["user"] else None
        overrides = {
            name: options[name]
            for name in ("steps", "scope", "lr", "masks_per_image", "augment")
            if options[name] is not None
        }
        try:
            training_round = round_launch(
                project=project, user=user, overrides=overrides, enqueue=not options["wait"]
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"round {training_round.number} of {project.name!r}: {training_round.train_masks} "
            f"masks on {training_round.train_images} images, validation "
            f"{training_round.validation_masks} masks on {training_round.validation_images} "
            f"images, parent version {training_round.parent_version_id}, job "
            f"{training_round.job_id}"
        )
        if not options["wait"]:
            self.stdout.write("queued on the gpu queue")
            return
        # tqdm redraws one line with "\r"; Django's OutputWrapper would add a newline per write.
        stream = getattr(self.stderr, "_out", self.stderr)
        bar = tqdm(
            total=training_round.config.get("steps"),
            unit="step",
            file=stream,
            disable=options["no_progress"],
            dynamic_ncols=True,
        )

        def progress(update: TrainProgress) -> None:
            bar.n = update.step
            bar.set_postfix(loss=f"{update.loss:.4f}", iou=f"{update.iou:.3f}", refresh=False)
            bar.refresh()

        try:
            finished = round_run_here(job_id=training_round.job_id, on_progress=progress)
        finally:
            bar.close()
        if finished is None:
            raise CommandError(f"round {training_round.number} had finished already")
        job = finished.job
        if job.status != job.Status.SUCCEEDED:
            raise CommandError(f"round {training_round.number} {job.status}: {job.error}")
        version = finished.produced_version
        assert version is not None  # a succeeded round always produced one
        validation = version.metrics.get("validation", {})
        parent = version.metrics.get("parent_validation", {})
        self.stdout.write(
            f"model version {version.pk} registered (sha256 {version.sha256}); validation "
            f"mIoU@1 {parent.get('miou@1', float('nan')):.4f} -> "
            f"{validation.get('miou@1', float('nan')):.4f}, clicks to 0.9 "
            f"{parent.get('clicks_to_0.9', float('nan')):.2f} -> "
            f"{validation.get('clicks_to_0.9', float('nan')):.2f}"
        )
