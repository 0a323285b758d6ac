"""Start, cancel and resume automatic and prefill runs; hand out their chunks.

A run is a ``Job`` (kind ``automatic`` or ``prefill``) and one ``AutomaticImage`` row per image.
Chunks of ``chunk`` pending images go to the ``gpu`` queue as ``gpu_automatic_chunk(job_id,
image_ids)``; ``in_flight`` chunks are queued at once and each finished chunk queues the next
one, so several workers share a run while the queue never holds more than ``in_flight`` of its
messages (a cancelled 11M-image run leaves no million stale tasks behind). Which images the
next chunk gets is decided under the job's row lock from a cursor (the highest image id handed
out, in ``job.result["cursor"]``), so two finishing chunks never hand out the same images.
"""

from collections.abc import Iterator, Sequence
from functools import partial
from itertools import islice
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from annotation.errors import DomainError
from annotation.ids import id_in_range
from annotation.models import Image, Mask, Project, Stage
from engine.models import AutomaticImage, Job
from engine.services.automatic.params import AUTOMATIC, MODES, PREFILL, resolve_settings
from engine.services.jobs import job_cancel, job_create

BULK_PRIORITY = 9  # Redis: after annotators' embedding requests (see services/embeddings.py)
ROW_BATCH = 5000
# A failure that says nothing about the image (its worker died on it too often): resume
# retries these; an image that does not decode stays failed.
RETRIABLE_PREFIX = "interrupted: "
_OUTPUT = {
    AUTOMATIC: {
        "source": Mask.Source.AUTOMATIC,
        "status": Mask.Status.ACCEPTED,
        "stage": Stage.FULLY_AUTOMATIC,
    },
    PREFILL: {
        "source": Mask.Source.PREFILL,
        "status": Mask.Status.PROPOSED,
        "stage": Stage.SEMI_AUTOMATIC,
    },
}
RUN_KINDS = (Job.Kind.AUTOMATIC, Job.Kind.PREFILL)


class AutomaticRefused(DomainError):
    """A run that cannot start, cancel or resume as asked."""

    code = "automatic_refused"


def default_chunk() -> int:
    return max(1, int(getattr(settings, "MASKLOOP_AUTOMATIC_CHUNK", 8)))


def default_in_flight() -> int:
    return max(1, int(getattr(settings, "MASKLOOP_AUTOMATIC_IN_FLIGHT", 4)))


def _positive(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
        raise AutomaticRefused(f"{name} must be an integer in [1, 10000], got {value!r}")
    return value


def _image_ids(project: Project, image_ids: Sequence[int] | None) -> list[int] | None:
    """The checked, de-duplicated ids (in id order), or None for every image of the project."""
    if image_ids is None:
        return None
    wanted = sorted({int(i) for i in image_ids})
    if not wanted:
        raise AutomaticRefused("the run has no images: the selection is empty")
    in_range = [i for i in wanted if id_in_range(i)]  # others are no image (and would overflow)
    found = set(Image.objects.filter(project=project, pk__in=in_range).values_list("id", flat=True))
    missing = [i for i in wanted if i not in found]
    if missing:
        shown = ", ".join(str(i) for i in missing[:20])
        raise AutomaticRefused(f"no images {shown} in project {project.name!r}")
    return wanted


@transaction.atomic
def automatic_start(
    *,
    project: Project,
    user: User | None,
    mode: str = AUTOMATIC,
    params: dict[str, Any] | None = None,
    image_ids: Sequence[int] | None = None,
    chunk: int | None = None,
    in_flight: int | None = None,
) -> Job:
    """Start a run over ``image_ids`` (None: every image of the project) with the project's
    deployed model version, pinned for the whole run; returns its Job (chunks queued on
    commit). Settings: see ``params.resolve_settings``. Raises InvalidAutomaticSettings or
    AutomaticRefused, writing nothing."""
    if mode not in MODES:
        raise AutomaticRefused(f"mode must be one of {MODES}, got {mode!r}")
    project = Project.objects.select_for_update().get(pk=project.pk)
    version = project.deployed_version
    if version is None:
        raise AutomaticRefused(
            f"project {project.name!r} has no deployed model version; deploy one first"
        )
    stored = project.automatic_settings if mode == AUTOMATIC else project.prefill_settings
    resolved = resolve_settings(mode=mode, project_settings=stored, params=params)
    chunk_size = _positive("chunk", chunk, default_chunk())
    window = _positive("in_flight", in_flight, default_in_flight())
    ids = _image_ids(project, image_ids)
    if ids is None and not Image.objects.filter(project=project).exists():
        raise AutomaticRefused(f"project {project.name!r} has no images")
    job = job_create(
        kind=Job.Kind.AUTOMATIC if mode == AUTOMATIC else Job.Kind.PREFILL,
        project=project,
        params={
            "mode": mode,
            "model_version_id": version.pk,
            "settings": resolved,
            "overrides": dict(params or {}),
            "chunk": chunk_size,
            "in_flight": window,
            "images": "all" if ids is None else "selected",
            **_OUTPUT[mode],
        },
        created_by=user,
        message=f"{mode} run with model version {version.pk} queued",
    )
    total = _create_rows(job, project, ids)
    Job.objects.filter(pk=job.pk).update(progress_total=total, result=_fresh_result(total))
    job.refresh_from_db()
    dispatch(job_id=job.pk, chunks=window, reset_cursor=True)
    return job


def _create_rows(job: Job, project: Project, ids: list[int] | None) -> int:
    """One pending row per image, written in batches (a whole project can be millions)."""
    source: Iterator[int] = (
        Image.objects.filter(project=project)
        .order_by("id")
        .values_list("id", flat=True)
        .iterator(chunk_size=ROW_BATCH)
        if ids is None
        else iter(ids)
    )
    total = 0
    while batch := [AutomaticImage(job=job, image_id=i) for i in islice(source, ROW_BATCH)]:
        AutomaticImage.objects.bulk_create(batch)
        total += len(batch)
    return total


def _fresh_result(total: int) -> dict[str, Any]:
    return {
        "cursor": 0,
        "total": total,
        "done": 0,
        "failed": 0,
        "masks": 0,
        "timings": {"load": 0.0, "encoder": 0.0, "decoder": 0.0, "postprocess": 0.0, "db": 0.0},
        "session": {"started_at": timezone.now().isoformat(), "processed_at_start": 0},
        "images_per_s": None,
        "eta_s": None,
    }


def dispatch(*, job_id: int, chunks: int, reset_cursor: bool = False) -> int:
    """Queue up to ``chunks`` chunks of the next pending images (on commit); returns how many
    were queued. Must run inside a transaction (it locks the job row)."""
    job = Job.objects.select_for_update().get(pk=job_id)
    if job.is_finished:
        return 0
    result = dict(job.result or {})
    cursor = 0 if reset_cursor else int(result.get("cursor") or 0)
    size = int(job.params.get("chunk") or default_chunk())
    pending = AutomaticImage.objects.filter(job_id=job_id, status=AutomaticImage.Status.PENDING)
    ids = list(
        pending.filter(image_id__gt=cursor)
        .order_by("image_id")
        .values_list("image_id", flat=True)[: size * chunks]
    )
    parts = [ids[i : i + size] for i in range(0, len(ids), size)]
    result["cursor"] = ids[-1] if ids else cursor
    Job.objects.filter(pk=job_id).update(result=result)
    for part in parts:
        transaction.on_commit(partial(_send_chunk, job_id, part), robust=False)
    return len(parts)


def _send_chunk(job_id: int, image_ids: list[int]) -> None:
    from engine.tasks import gpu_automatic_chunk  # the task module imports this package

    gpu_automatic_chunk.apply_async(args=[job_id, image_ids], queue="gpu", priority=BULK_PRIORITY)


def _run_job(job_id: int) -> Job:
    job = Job.objects.filter(pk=job_id).select_related("project").first()
    if job is None or job.kind not in RUN_KINDS:
        raise AutomaticRefused(f"no automatic or prefill run {job_id}")
    return job


@transaction.atomic
def automatic_cancel(*, job_id: int) -> Job:
    """Cancel a run: each worker stops after the image it is on; the rest stays pending for a
    resume. A finished run is returned as it is."""
    _run_job(job_id)
    return job_cancel(job_id=job_id)


@transaction.atomic
def automatic_resume(*, job_id: int, retry_failed: bool = False) -> Job:
    """Continue a cancelled, failed or finished run with its pinned version and settings: the
    pending images, the failed ones whose failure was an interruption, and with
    ``retry_failed`` every failed image. AutomaticRefused if it is running or nothing is left.
    """
    job = _run_job(job_id)
    if not job.is_finished:
        raise AutomaticRefused(f"run {job_id} is {job.status}; cancel it before resuming")
    failed = AutomaticImage.objects.filter(job_id=job_id, status=AutomaticImage.Status.FAILED)
    if not retry_failed:
        failed = failed.filter(error__startswith=RETRIABLE_PREFIX)
    retried = failed.update(status=AutomaticImage.Status.PENDING, error="", attempts=0)
    job = Job.objects.select_for_update().get(pk=job_id)
    if not job.is_finished:  # resumed meanwhile by another request
        raise AutomaticRefused(f"run {job_id} is {job.status}; cancel it before resuming")
    pending = AutomaticImage.objects.filter(
        job_id=job_id, status=AutomaticImage.Status.PENDING
    ).count()
    if pending == 0:
        raise AutomaticRefused(f"run {job_id} has no pending or retriable images left")
    result = dict(job.result or {})
    result["failed"] = max(0, int(result.get("failed") or 0) - retried)
    processed = int(result.get("done") or 0) + int(result["failed"])
    result["session"] = {"started_at": timezone.now().isoformat(), "processed_at_start": processed}
    result["images_per_s"] = result["eta_s"] = None
    job.status = Job.Status.QUEUED
    job.runner = ""  # the worker that takes the new chunks (job_received, job_start)
    job.finished_at = None
    job.error = ""
    job.progress_done = processed
    job.result = result
    job.message = f"resumed: {pending} images pending"
    job.save()
    dispatch(job_id=job_id, chunks=int(job.params.get("in_flight") or 1), reset_cursor=True)
    job.refresh_from_db()
    return job
