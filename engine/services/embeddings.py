"""The shared embedding store: an image's encoder output, computed once per model version.

Key: ``embeddings/<model_version_id>/<image sha256>.npz``, an uncompressed ``.npz`` with
``embedding`` (1 x C x 64 x 64, dtype ``MASKLOOP_EMBEDDING_DTYPE``), ``original_size`` and
``input_size`` (int64 (H, W), (h, w)). Read with ``allow_pickle=False``: a stored blob can only
ever be numbers. Writes go through the blob store, which is atomic (temp file + rename locally,
a single PUT on S3), so a reader sees a whole embedding or none.

Storage dtype, measured with ``python bench/embedding_storage.py`` (6 synthetic images of 6
sizes, 7 prompts each, decoded from the float32 embedding and from the same embedding rounded
to float16): golden vit_tiny weights, 3.0e-5 of mask pixels differ, worst mask IoU 0.99975,
IoU predictions within 3.4e-5; random-init vit_b weights (``--checkpoint``, 2 images): 2.5e-5 of
pixels, worst IoU 0.99992, IoU predictions within 6e-6. That is far below the 0.1 % mask
parity bar, for half the bytes (2 MiB instead of 4 MiB per vit_b embedding), so ``float16`` is
the default of ``MASKLOOP_EMBEDDING_DTYPE``; embeddings are always used as float32.

Queues: everything runs on the ``gpu`` queue. On Redis, kombu keeps one list per priority step
(0, 3, 6, 9) and the worker pops them in that order, so **0 is served first**: images annotators
are about to open go with priority 0, bulk precompute chunks with 9. A bulk job is a chain of
short tasks (``MASKLOOP_EMBEDDING_CHUNK`` images each), so a request waits at most one chunk.
The filesystem broker (the no-server default) ignores priorities: requests then run in the
order they were sent.
"""

import io
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from annotation.errors import DomainError, ImageRejected
from annotation.imaging import load_rgb_array
from annotation.models import Image, Project
from engine.inference import model_for_version
from engine.models import Job, ModelVersion
from engine.sam.embedding import ImageEmbedding, embed_images
from engine.selectors import image_get, model_version_get, project_image_count, project_images_after
from engine.services.jobs import (
    JobCancelled,
    job_create,
    job_enqueue,
    job_progress,
    job_start,
    job_succeed,
)
from storage.blobs import BlobNotFound, get_blob_store

logger = logging.getLogger(__name__)

REQUEST_PRIORITY = 0  # Redis: the first list the worker pops
BULK_PRIORITY = 9  # Redis: the last
FORMAT = "maskloop-embedding/1"
_DTYPES = {"float16": np.float16, "float32": np.float32}


class EmbeddingRefused(DomainError):
    """Embeddings cannot be computed as asked (no deployed version, wrong project...)."""

    code = "embedding_refused"


def embedding_key(*, model_version_id: int, image_sha256: str) -> str:
    return f"embeddings/{model_version_id}/{image_sha256}.npz"


def embedding_to_bytes(embedding: ImageEmbedding, *, dtype: str | None = None) -> bytes:
    """The ``.npz`` bytes of an embedding stored as ``dtype`` (default: the setting)."""
    numpy_dtype = _DTYPES[dtype or settings.MASKLOOP_EMBEDDING_DTYPE]
    out = io.BytesIO()
    np.savez(
        out,
        format=np.array(FORMAT),
        embedding=embedding.embedding.detach().cpu().numpy().astype(numpy_dtype),
        original_size=np.array(embedding.original_size, dtype=np.int64),
        input_size=np.array(embedding.input_size, dtype=np.int64),
    )
    return out.getvalue()


def embedding_from_bytes(data: bytes) -> ImageEmbedding:
    """Parse stored bytes (never unpickles); ValueError for anything that is not one of ours."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            if str(arrays["format"]) != FORMAT:
                raise ValueError(f"unknown embedding format {str(arrays['format'])!r}")
            values = arrays["embedding"]
            original = tuple(int(v) for v in arrays["original_size"])
            input_size = tuple(int(v) for v in arrays["input_size"])
    except (OSError, KeyError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a stored embedding ({exc})") from exc
    if values.ndim != 4 or values.shape[0] != 1 or len(original) != 2 or len(input_size) != 2:
        raise ValueError(f"malformed stored embedding of shape {values.shape}")
    tensor = torch.from_numpy(values.astype(np.float32))
    return ImageEmbedding(tensor, (original[0], original[1]), (input_size[0], input_size[1]))


def embedding_load(*, image: Image, model_version: ModelVersion) -> ImageEmbedding | None:
    """The stored embedding of ``image`` for ``model_version`` (float32), or None if not yet."""
    key = embedding_key(model_version_id=model_version.pk, image_sha256=image.sha256)
    try:
        data = get_blob_store().get_bytes(key)
    except BlobNotFound:
        return None
    return embedding_from_bytes(data)


# --- computing ---------------------------------------------------------------------------------


@dataclass
class ComputeOutcome:
    computed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # stored already
    failed: dict[int, str] = field(default_factory=dict)  # image id -> reason


def embedding_compute(*, image_id: int, model_version_id: int) -> str:
    """Compute and store one image's embedding unless it is stored already; returns its key."""
    image = image_get(image_id=image_id)
    version = model_version_get(version_id=model_version_id)
    outcome = embeddings_compute(images=[image], model_version=version)
    if image.pk in outcome.failed:
        raise EmbeddingRefused(f"image {image.pk}: {outcome.failed[image.pk]}")
    return embedding_key(model_version_id=version.pk, image_sha256=image.sha256)


def embeddings_compute(*, images: Sequence[Image], model_version: ModelVersion) -> ComputeOutcome:
    """Embed the images that have no stored embedding yet, batched on the inference device.

    An image whose blob is missing or no longer decodes is reported in ``failed`` (the others
    go on); an unreachable blob store raises ``BlobStoreUnavailable`` for the caller to retry.
    """
    store = get_blob_store()
    outcome = ComputeOutcome()
    todo: list[tuple[Image, np.ndarray]] = []
    for image in images:
        key = embedding_key(model_version_id=model_version.pk, image_sha256=image.sha256)
        if store.exists(key):
            outcome.skipped.append(image.pk)
            continue
        try:
            todo.append((image, load_rgb_array(store.get_bytes(image.blob_key))))
        except (BlobNotFound, ImageRejected) as exc:
            logger.warning("image %s cannot be embedded: %s", image.pk, exc)
            outcome.failed[image.pk] = str(exc) or type(exc).__name__
    if not todo:
        return outcome
    results = embed_images(
        model_for_version(model_version),
        [pixels for _, pixels in todo],
        precision=settings.MASKLOOP_EMBEDDING_PRECISION,
        batch_size=max(1, settings.MASKLOOP_EMBEDDING_BATCH_SIZE),
    )
    for (image, _), embedding in zip(todo, results, strict=True):
        key = embedding_key(model_version_id=model_version.pk, image_sha256=image.sha256)
        store.put_bytes(key, embedding_to_bytes(embedding), content_type="application/x-npz")
        outcome.computed.append(image.pk)
    return outcome


# --- queueing ----------------------------------------------------------------------------------


def embeddings_request(
    *, images: Sequence[Image], model_version: ModelVersion, priority: bool = True
) -> list[int]:
    """Queue the images (in the given order) whose embedding is not stored yet; returns their
    ids. With ``priority`` they jump ahead of bulk precompute chunks (Redis; see above)."""
    foreign = [image.pk for image in images if image.project_id != model_version.project_id]
    if foreign:
        raise EmbeddingRefused(
            f"images {foreign} are not in the project of model version {model_version.pk}"
        )
    store = get_blob_store()
    missing = [
        image.pk
        for image in images
        if not store.exists(
            embedding_key(model_version_id=model_version.pk, image_sha256=image.sha256)
        )
    ]
    from engine.tasks import gpu_compute_embedding  # the task module imports this one

    level = REQUEST_PRIORITY if priority else BULK_PRIORITY
    version_id = model_version.pk

    def send() -> None:
        for image_id in missing:
            gpu_compute_embedding.apply_async(
                args=[image_id, version_id], queue="gpu", priority=level
            )

    transaction.on_commit(send, robust=False)
    return missing


def _resolve_version(project: Project, model_version: ModelVersion | None) -> ModelVersion:
    version = model_version or project.deployed_version
    if version is None:
        raise EmbeddingRefused(
            f"project {project.name!r} has no deployed model version; deploy one or name one"
        )
    if version.project_id != project.pk:
        raise EmbeddingRefused(f"model version {version.pk} is not in project {project.name!r}")
    if version.status != ModelVersion.Status.READY:
        raise EmbeddingRefused(f"model version {version.pk} is {version.status}, not ready")
    return version


@transaction.atomic
def embeddings_precompute_start(
    *, project: Project, model_version: ModelVersion | None = None, user: User | None = None
) -> Job:
    """Create an ``embed`` Job for every image of the project (deployed version by default) and
    queue its first chunk on the ``gpu`` queue at bulk priority."""
    version = _resolve_version(project, model_version)
    chunk = max(1, int(settings.MASKLOOP_EMBEDDING_CHUNK))
    job = job_create(
        kind=Job.Kind.EMBED,
        project=project,
        params={"model_version_id": version.pk, "chunk": chunk},
        created_by=user,
        total=project_image_count(project=project),
        message=f"embeddings with model version {version.pk} queued",
    )
    _enqueue_chunk(job)
    return job


def _enqueue_chunk(job: Job) -> None:
    from engine.tasks import gpu_precompute_embeddings  # the task module imports this one

    job_enqueue(
        job=job, task=gpu_precompute_embeddings.s().set(priority=BULK_PRIORITY), queue="gpu"
    )


def embeddings_precompute_run(*, job_id: int, task_id: str = "") -> dict[str, Any] | None:
    """Run one chunk of an ``embed`` job; queue the next chunk or finish the job.

    Resumable and idempotent: the cursor (last image id done) lives in ``job.result`` and stored
    embeddings are skipped, so a redelivered or rerun chunk redoes nothing. Returns the job's
    state, or None when it had finished already or was cancelled.
    """
    job = Job.objects.select_related("project").get(pk=job_id)
    project = job.project
    if job.is_finished or project is None:
        return None
    if job.status == Job.Status.QUEUED:  # the first chunk; later chunks continue a running job
        started = job_start(job_id=job_id, task_id=task_id)
        if started is None:
            return None
        job = started
    version = model_version_get(version_id=int(job.params["model_version_id"]))
    chunk = int(job.params.get("chunk") or settings.MASKLOOP_EMBEDDING_CHUNK)
    state = {
        "cursor": 0,
        "done": 0,
        "computed": 0,
        "skipped": 0,
        "failed": {},
        **(job.result or {}),
    }
    total = project_image_count(project=project)
    try:
        job_progress(job_id=job_id, done=state["done"], total=total)
        images = project_images_after(project=project, after_id=state["cursor"], limit=chunk)
        if images:
            outcome = embeddings_compute(images=images, model_version=version)
            state["cursor"] = images[-1].pk
            state["done"] += len(images)
            state["computed"] += len(outcome.computed)
            state["skipped"] += len(outcome.skipped)
            state["failed"].update({str(k): v for k, v in outcome.failed.items()})
            Job.objects.filter(pk=job_id).update(result=state)
            job_progress(
                job_id=job_id,
                done=state["done"],
                total=max(total, state["done"]),
                message=f"{state['done']} of {total} images",
            )
    except JobCancelled:
        logger.info("embedding job %s was cancelled after %s images", job_id, state["done"])
        return None
    if len(images) == chunk:
        _enqueue_chunk(job)
        return state
    job_succeed(
        job_id=job_id,
        result=state,
        message=f"{state['computed']} embeddings computed, {state['skipped']} already stored, "
        f"{len(state['failed'])} failed",
    )
    return state
