"""Reads of automatic and prefill runs: the runs of a project, one run's per-image figures."""

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, QuerySet, Sum

from annotation.models import Image, Project
from engine.models import AutomaticImage, Job
from engine.services.automatic.lifecycle import RUN_KINDS

FAILED_SHOWN = 100


def automatic_runs(*, project: Project, kind: str | None = None) -> QuerySet[Job]:
    """The project's automatic (and prefill) runs, newest first."""
    kinds = [kind] if kind else list(RUN_KINDS)
    return Job.objects.filter(project=project, kind__in=kinds).select_related("created_by")


@dataclass
class RunImages:
    """Per-image figures of one run: counts by status, masks, timings, the failed images."""

    pending: int = 0
    done: int = 0
    failed: int = 0
    masks: int = 0
    mean_timings: dict[str, float] = field(default_factory=dict)
    failed_images: list[dict[str, Any]] = field(default_factory=list)


def automatic_run_images(*, job: Job, failed_limit: int = FAILED_SHOWN) -> RunImages:
    """Counts from the rows (exact, whatever the job's counters say), the mean seconds per
    done image and stage, and the first ``failed_limit`` failed images with their reasons."""
    figures = RunImages()
    rows = AutomaticImage.objects.filter(job=job)
    for entry in rows.values("status").annotate(n=Count("id"), masks=Sum("masks")):
        setattr(figures, entry["status"], int(entry["n"]))
        if entry["status"] == AutomaticImage.Status.DONE:
            figures.masks = int(entry["masks"] or 0)
    sums = (job.result or {}).get("timings") or {}
    done_total = int((job.result or {}).get("done") or 0)
    if done_total:
        figures.mean_timings = {
            stage: round(float(seconds) / done_total, 6) for stage, seconds in sums.items()
        }
    figures.failed_images = [
        {"image": row.image_id, "error": row.error, "attempts": row.attempts}
        for row in rows.filter(status=AutomaticImage.Status.FAILED).order_by("image_id")[
            :failed_limit
        ]
    ]
    return figures


def automatic_run_get(*, project: Project, job_id: int) -> Job | None:
    return automatic_runs(project=project).filter(pk=job_id).first()


IMAGE_FILTERS = "all | todo | ids:1,2,5 | since:<image id>"


def automatic_image_filter(*, project: Project, spec: str) -> list[int] | None:
    """The image ids a filter names, in id order; None for every image of the project.

    ``all``: every image; ``todo``: the images no annotator marked done; ``ids:1,2,5``: those
    images (each must be in the project; checked by the start); ``since:<id>``: the images with
    an id of at least ``<id>`` (e.g. the ones imported after a run). ValueError otherwise.
    """
    text = spec.strip()
    kind, _, argument = text.partition(":")
    kind = kind.strip().lower()
    images = Image.objects.filter(project=project).order_by("id")
    if kind == "all" and not argument:
        return None
    if kind == "todo" and not argument:
        return list(images.filter(status=Image.Status.TODO).values_list("id", flat=True))
    try:
        if kind == "ids":
            return [int(part) for part in argument.split(",") if part.strip()]
        if kind == "since":
            return list(images.filter(pk__gte=int(argument)).values_list("id", flat=True))
    except ValueError:
        pass
    raise ValueError(f"image filter {spec!r}: use {IMAGE_FILTERS}")
