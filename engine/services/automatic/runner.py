"""The chunk runner of automatic and prefill runs: a few images, one at a time.

Per image: read it, take the pinned version's stored embedding when there is one (else the
encoder runs and the embedding is stored for everyone), generate, then in ONE transaction lock
its ``AutomaticImage`` row, replace the run's masks of the image (``masks_replace_for_run``),
mark the row done with its timings, and add it to the job's counters. The row lock makes every
path idempotent: a redelivered chunk (its worker was killed), a chunk queued again by a resume,
or two workers racing on an image all end with the image's masks written once. An image that
cannot be read or whose masks do not fit it is marked failed with the reason and the run goes
on; anything else (a bug, an unreachable store after its retries) fails the task and the job.
"""

import logging
import time
from datetime import datetime
from typing import Any

import torch
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image as PilImage

from annotation.errors import ImageRejected, InvalidMask
from annotation.imaging import load_rgb_array
from annotation.models import Image
from annotation.services.masks_bulk import masks_replace_for_run
from engine.inference import model_for_version
from engine.models import AutomaticImage, Job, ModelVersion
from engine.sam.embedding import ImageEmbedding
from engine.services.automatic.generation import RunGenerator, StageTimes
from engine.services.automatic.lifecycle import RETRIABLE_PREFIX, dispatch
from engine.services.embeddings import embedding_from_bytes, embedding_key, embedding_to_bytes
from engine.services.jobs import job_start, job_succeed, process_identity
from storage.blobs import BlobNotFound, get_blob_store

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # starts of one image before it counts as failed (a worker dies on it)
_STAGES = ("load", "encoder", "decoder", "postprocess", "db")
_generator_cache: dict[tuple[int, str, str, str], RunGenerator] = {}


def _generator(version: ModelVersion, run_settings: dict[str, Any]) -> RunGenerator:
    """One generator per process for the last (version, settings) seen: chunks of one run
    reuse it (the model itself comes from the process's model cache)."""
    precision = str(settings.MASKLOOP_EMBEDDING_PRECISION)
    key = (int(version.pk), version.sha256, repr(sorted(run_settings.items())), precision)
    cached = _generator_cache.get(key)
    if cached is None:
        _generator_cache.clear()
        model = model_for_version(version)
        cached = RunGenerator(model, settings=run_settings, precision=precision)
        _generator_cache[key] = cached
    return cached


@transaction.atomic
def _begin(job_id: int, task_id: str) -> Job | None:
    """The running job (a queued one is started); None when it is finished or cancelled."""
    job = Job.objects.select_for_update().get(pk=job_id)
    if job.is_finished:
        return None
    if job.status == Job.Status.QUEUED:
        return job_start(job_id=job_id, task_id=task_id)
    return job


def _running(job_id: int) -> bool:
    return Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).exists()


def automatic_chunk_run(
    *, job_id: int, image_ids: list[int], task_id: str = ""
) -> dict[str, Any] | None:
    """Run one chunk of a run, then queue the next chunk or finish the job.

    Returns the job's result, or None when the job had finished or was cancelled (a cancel
    is noticed before each image, so the image being generated is still completed).
    """
    job = _begin(job_id, task_id)
    if job is None:
        return None
    version = ModelVersion.objects.get(pk=int(job.params["model_version_id"]))
    generator = _generator(version, dict(job.params["settings"]))
    for image_id in image_ids:
        if not _running(job_id):
            logger.info("run %s stopped before image %s (%s)", job_id, image_id, "cancelled")
            return None
        _image_run(job=job, version=version, generator=generator, image_id=image_id)
    return _chunk_finish(job_id)


@transaction.atomic
def _chunk_finish(job_id: int) -> dict[str, Any] | None:
    if dispatch(job_id=job_id, chunks=1):
        return Job.objects.get(pk=job_id).result
    job = Job.objects.select_for_update().get(pk=job_id)
    if job.status != Job.Status.RUNNING:
        return None
    if AutomaticImage.objects.filter(job_id=job_id, status=AutomaticImage.Status.PENDING).exists():
        return job.result  # images still in other chunks: their last one finishes the job
    result = dict(job.result)
    job_succeed(
        job_id=job_id,
        result=result,
        message=f"{result['done']} images done ({result['masks']} masks), "
        f"{result['failed']} failed",
    )
    return result


def _image_run(*, job: Job, version: ModelVersion, generator: RunGenerator, image_id: int) -> None:
    row = AutomaticImage.objects.filter(job_id=job.pk, image_id=image_id).first()
    if row is None or row.status != AutomaticImage.Status.PENDING:
        return  # done already: a redelivered or repeated chunk
    # Counted before the work, so that a worker killed on this image leaves a trace.
    AutomaticImage.objects.filter(pk=row.pk).update(attempts=F("attempts") + 1)
    if row.attempts + 1 > MAX_ATTEMPTS:
        _image_fail(
            job=job,
            row_id=row.pk,
            error=f"{RETRIABLE_PREFIX}the worker stopped {row.attempts} times on this image",
        )
        return
    image = Image.objects.get(pk=image_id)
    start = time.perf_counter()
    try:
        pixels = load_rgb_array(get_blob_store().get_bytes(image.blob_key))
    except (
        BlobNotFound,
        ImageRejected,
        OSError,
        ValueError,
        PilImage.DecompressionBombError,
    ) as exc:
        _image_fail(job=job, row_id=row.pk, error=f"the image cannot be read: {_reason(exc)}")
        return
    stored = _stored_embedding(image, version)
    load_s = time.perf_counter() - start
    try:
        records, times, computed = generator.generate_image(pixels, stored=stored)
    except torch.OutOfMemoryError as exc:
        _image_fail(job=job, row_id=row.pk, error=f"{RETRIABLE_PREFIX}out of memory ({exc})")
        return
    except ValueError as exc:
        _image_fail(job=job, row_id=row.pk, error=f"generation failed: {_reason(exc)}")
        return
    times.load = load_s
    # With the score filters lowered a candidate can have no pixel above the threshold; the
    # generator keeps it (as the official one does), the masks table has no use for it.
    records = [record for record in records if int(record["area"]) > 0]
    if computed is not None:
        key = embedding_key(model_version_id=version.pk, image_sha256=image.sha256)
        get_blob_store().put_bytes(
            key, embedding_to_bytes(computed), content_type="application/x-npz"
        )
    try:
        _image_store(job=job, row_id=row.pk, image=image, version=version, records=records,
                     times=times)  # fmt: skip
    except InvalidMask as exc:
        _image_fail(job=job, row_id=row.pk, error=f"the masks do not fit: {exc.message}")


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _stored_embedding(image: Image, version: ModelVersion) -> ImageEmbedding | None:
    key = embedding_key(model_version_id=version.pk, image_sha256=image.sha256)
    try:
        return embedding_from_bytes(get_blob_store().get_bytes(key))
    except BlobNotFound:
        return None
    except ValueError as exc:  # a damaged blob: computed again and overwritten
        logger.warning("stored embedding %s is unreadable (%s); recomputing", key, exc)
        return None


@transaction.atomic
def _image_store(
    *,
    job: Job,
    row_id: int,
    image: Image,
    version: ModelVersion,
    records: list[dict[str, Any]],
    times: StageTimes,
) -> None:
    row = AutomaticImage.objects.select_for_update().get(pk=row_id)
    if row.status != AutomaticImage.Status.PENDING:
        return  # another worker finished it while this one was generating
    start = time.perf_counter()
    count = masks_replace_for_run(
        job=job,
        image=image,
        records=records,
        source=job.params["source"],
        status=job.params["status"],
        stage=job.params["stage"],
        model_version=version,
    )
    times.db = time.perf_counter() - start
    row.status = AutomaticImage.Status.DONE
    row.masks = count
    row.error = ""
    row.model_version = version
    row.timings = times.as_dict()
    row.save(update_fields=["status", "masks", "error", "model_version", "timings", "updated_at"])
    _count(job_id=job.pk, done=1, masks=count, times=times)


@transaction.atomic
def _image_fail(*, job: Job, row_id: int, error: str) -> None:
    row = AutomaticImage.objects.select_for_update().get(pk=row_id)
    if row.status != AutomaticImage.Status.PENDING:
        return
    logger.warning("run %s: image %s failed: %s", job.pk, row.image_id, error)
    row.status = AutomaticImage.Status.FAILED
    row.error = error
    row.save(update_fields=["status", "error", "updated_at"])
    _count(job_id=job.pk, failed=1)


def _count(
    *, job_id: int, done: int = 0, failed: int = 0, masks: int = 0, times: StageTimes | None = None
) -> None:
    """Add one image's outcome to the job's counters, throughput and ETA. Called last in the
    image's transaction, so the job row is locked only for the commit."""
    job = Job.objects.select_for_update().only("result", "progress_total").get(pk=job_id)
    result = dict(job.result or {})
    result["done"] = int(result.get("done") or 0) + done
    result["failed"] = int(result.get("failed") or 0) + failed
    result["masks"] = int(result.get("masks") or 0) + masks
    if times is not None:
        sums = dict(result.get("timings") or {})
        for stage in _STAGES:
            sums[stage] = round(float(sums.get(stage) or 0.0) + getattr(times, stage), 6)
        result["timings"] = sums
    processed = result["done"] + result["failed"]
    total = int(job.progress_total or result.get("total") or processed)
    session = result.get("session") or {}
    rate: float | None = None
    eta: float | None = None
    if session.get("started_at"):
        elapsed = (timezone.now() - datetime.fromisoformat(session["started_at"])).total_seconds()
        since = processed - int(session.get("processed_at_start") or 0)
        if elapsed > 0 and since > 0:
            rate = since / elapsed
            eta = max(0, total - processed) / rate
    result["images_per_s"] = None if rate is None else round(rate, 4)
    result["eta_s"] = None if eta is None else round(eta, 1)
    Job.objects.filter(pk=job_id).update(
        result=result,
        progress_done=processed,
        heartbeat_at=timezone.now(),
        runner=process_identity(),  # chunks of one run may run in other processes
        message=_progress_message(processed, total, result["failed"], rate, eta),
    )


def _progress_message(
    processed: int, total: int, failed: int, rate: float | None, eta: float | None
) -> str:
    text = f"{processed} of {total} images"
    if failed:
        text += f" ({failed} failed)"
    if rate is not None and eta is not None:
        minutes, seconds = divmod(int(eta + 0.5), 60)
        hours, minutes = divmod(minutes, 60)
        text += f", {rate:.2f} images/s, ETA {hours}h{minutes:02d}m{seconds:02d}s"
    return text
