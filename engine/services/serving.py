"""What a web process needs to serve a model version to the annotation tool.

- :func:`serving_version` resolves the version a request names (or the project's deployed one)
  and answers 409 when it is gone, so a tool open on a deleted version learns which to reload;
- :func:`embedding_cached` reads stored embeddings through a per-process LRU of
  ``MASKLOOP_EMBEDDING_CACHE_SIZE`` entries (float32 on the CPU; blobs may be float16);
- :func:`embedding_queue` asks the ``gpu`` queue for a missing embedding with annotator
  priority, at most once per ``QUEUE_AGAIN_SECONDS`` per (version, image) however often the tool
  polls: a lost task is sent again after that, never a flood of duplicates.

- :func:`decode_image_get` reads the image a decode names, its project, deployed version and
  the caller's role in one query;
- :func:`on_decoder_thread` runs torch work on one thread per process (see there why);
  :func:`decoder_wake` wakes that thread and its OpenMP team as a decode request comes in.

Nothing here runs the image encoder: embeddings are computed by workers only.
"""

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.exceptions import PermissionDenied
from django.http import Http404

from annotation.errors import DomainError
from annotation.ids import id_in_range
from annotation.models import Image, Membership, Project
from annotation.permissions import ADMIN, ANNOTATOR, ROLE_RANK, is_superuser
from annotation.selectors.raw_rows import Columns, RawRowQuery
from engine.models import ModelVersion
from engine.sam.config import SamConfig
from engine.sam.embedding import ImageEmbedding
from engine.sam.transforms import ResizeLongestSide
from engine.selectors import model_version_for_project
from engine.services.embeddings import embedding_key, embedding_load, embeddings_request
from engine.services.process_pool import ProcessThreadPool
from storage.blobs import get_blob_store

logger = logging.getLogger(__name__)

QUEUE_AGAIN_SECONDS = 120
T = TypeVar("T")


class ModelVersionGone(DomainError):
    """The version asked for is not one of the project's (deleted, never existed, another
    project's) or is retired."""

    status_code = 409
    code = "model_version_gone"

    def __init__(self, message: str, *, deployed_version: ModelVersion | None) -> None:
        super().__init__(message)
        self.deployed_version = deployed_version


class NoDeployedVersion(DomainError):
    """No version was named and the project has none deployed."""

    status_code = 409
    code = "no_deployed_version"


class EmbeddingNotReady(DomainError):
    """The image's embedding is not stored yet (a decode: it has been queued)."""

    status_code = 409
    code = "embedding_not_ready"


class EmbeddingDataNotReady(EmbeddingNotReady):
    """The embedding bytes were asked for before they exist."""

    status_code = 404


def serving_version(*, project: Project, version_id: int | None) -> ModelVersion:
    """Version ``version_id`` of ``project`` (default: the deployed one), ready to serve.

    Raises ModelVersionGone (carrying the deployed version) for an id that is not a ready
    version of the project, NoDeployedVersion when none is named and none is deployed.
    """
    deployed = project.deployed_version
    if deployed is not None and deployed.status != ModelVersion.Status.READY:
        deployed = None
    if version_id is None:
        if deployed is None:
            raise NoDeployedVersion(f"project {project.name!r} has no deployed model version")
        return deployed
    if deployed is not None and deployed.pk == version_id and deployed.project_id == project.pk:
        return deployed  # the tool names the deployed version: read with the project already
    version = model_version_for_project(project=project, version_id=version_id)
    if version is None or version.status != ModelVersion.Status.READY:
        # Deleted, another project's or no version at all: the one thing known is that it is
        # not this project's (and whether another project has it is not ours to say).
        state = (
            f"is not a version of project {project.name!r}"
            if version is None
            else f"is {version.status}"
        )
        raise ModelVersionGone(
            f"model version {version_id} {state}; reload the tool with the deployed version",
            deployed_version=deployed,
        )
    return version


@dataclass(frozen=True)
class EmbeddingShape:
    """What a client needs to use an embedding: 1 x C x S x S and the image's two sizes."""

    shape: tuple[int, int, int, int]
    input_size: tuple[int, int]  # (h, w): longest side resized to the model input
    original_size: tuple[int, int]  # (H, W)


def embedding_shape(*, image: Image, model_version: ModelVersion) -> EmbeddingShape:
    """The shape of the stored embedding, from the version's configuration (nothing read)."""
    config = SamConfig.from_dict(model_version.config)
    side = config.embedding_size
    input_size = ResizeLongestSide.get_preprocess_shape(
        image.height, image.width, config.image_size
    )
    return EmbeddingShape(
        shape=(1, config.prompt_embed_dim, side, side),
        input_size=input_size,
        original_size=(image.height, image.width),
    )


def embedding_prepare(*, image: Image, model_version: ModelVersion) -> EmbeddingShape | None:
    """The embedding's shape when it is stored; otherwise queue it with annotator priority
    (see :func:`embedding_queue`) and return None. Safe to call on every poll."""
    if embedding_is_stored(image=image, model_version=model_version):
        return embedding_shape(image=image, model_version=model_version)
    embedding_queue(image=image, model_version=model_version)
    return None


def embedding_float32_bytes(embedding: ImageEmbedding) -> bytes:
    """The embedding as little-endian float32, C order (1 x C x S x S), for browser decoders."""
    values = embedding.embedding.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


# --- the per-process LRU of embeddings ---------------------------------------------------------

_lock = threading.Lock()
_embeddings: "OrderedDict[tuple[int, str], ImageEmbedding]" = OrderedDict()
_blob_reads = 0  # embeddings read from the blob store by this process (observable in tests)


def embedding_cached(*, image: Image, model_version: ModelVersion) -> ImageEmbedding | None:
    """The float32 embedding of ``image`` for ``model_version``, or None while not stored.

    Read once from the blob store, then served from memory until evicted. Two requests that
    miss at the same time may both read the blob; the second insert wins (same bytes).
    """
    global _blob_reads
    key = (int(model_version.pk), image.sha256)
    with _lock:
        hit = _embeddings.get(key)
        if hit is not None:
            _embeddings.move_to_end(key)
            return hit
    # Parsed on the decoder thread: the float32 conversion is a torch operation (see there).
    loaded = on_decoder_thread(lambda: embedding_load(image=image, model_version=model_version))
    if loaded is None:
        return None
    with _lock:
        _blob_reads += 1
        _embeddings[key] = loaded
        _embeddings.move_to_end(key)
        while len(_embeddings) > max(1, int(settings.MASKLOOP_EMBEDDING_CACHE_SIZE)):
            _embeddings.popitem(last=False)
    return loaded


def embedding_is_stored(*, image: Image, model_version: ModelVersion) -> bool:
    with _lock:
        if (int(model_version.pk), image.sha256) in _embeddings:
            return True
    key = embedding_key(model_version_id=model_version.pk, image_sha256=image.sha256)
    return get_blob_store().exists(key)


def embedding_cache_reads() -> int:
    """How many embeddings this process has read from the blob store into its LRU."""
    return _blob_reads


def embedding_cache_clear() -> None:
    """Forget every cached embedding (tests; the next decode reads the blob again)."""
    with _lock:
        _embeddings.clear()


# --- queueing ------------------------------------------------------------------------------------


def embedding_queue(*, image: Image, model_version: ModelVersion) -> bool:
    """Queue ``image``'s embedding with annotator priority unless it was queued in the last
    ``QUEUE_AGAIN_SECONDS`` (shared through the cache) or is stored; True when sent now."""
    marker = f"embedding-queued:{model_version.pk}:{image.sha256}"
    if not caches["default"].add(marker, 1, timeout=QUEUE_AGAIN_SECONDS):
        return False
    queued = embeddings_request(images=[image], model_version=model_version, priority=True)
    if not queued:
        caches["default"].delete(marker)  # stored meanwhile: nothing to wait for
    return bool(queued)


# --- the request's image, in one query -----------------------------------------------------------


_IMAGE = Columns(
    Image, "i", ("id", "project", "blob_key", "sha256", "width", "height", "file_name", "status")
)
_PROJECT = Columns(Project, "p", ("id", "name", "stage", "deployed_version"))
_DEPLOYED = Columns(
    ModelVersion,
    "v",
    ("id", "project", "name", "arch", "checkpoint_key", "sha256", "onnx_decoder_key", "status"),
)
_MEMBERSHIP = Columns(Membership, "m", ("id", "role"))
_DECODE_IMAGE = RawRowQuery(
    [_IMAGE, _PROJECT, _DEPLOYED, _MEMBERSHIP],
    "FROM {t[i]} i INNER JOIN {t[p]} p ON {c[p][id]} = {c[i][project]} "
    "LEFT JOIN {t[v]} v ON {c[v][id]} = {c[p][deployed_version]} "
    "LEFT JOIN {t[m]} m ON {c[m][project]} = {c[p][id]} AND {c[m][user]} = %s "
    "WHERE {c[i][id]} = %s",
)


def decode_image_get(*, user: User, image_id: int) -> Image:
    """Image ``image_id`` with its project and deployed version, for a caller who is at least an
    annotator there: 404 when its project is not visible to ``user``, 403 when the role is too
    low (the rules of ``image_get_for_user`` and ``require_role``: superusers see every
    project as admins, everyone else the projects they are members of, with that role).

    One hand-written query (annotation.selectors.raw_rows) for the image, its project, the
    deployed version and the caller's membership: 0.18-0.27 ms in a decode request where the
    ORM's joined query took 1.31 ms, on every click of the tool. Dates and JSON fields load on
    first access.
    """
    # An id no row can have is no image (and the raw query would overflow SQLite's driver).
    found = _DECODE_IMAGE.first([user.pk, image_id]) if id_in_range(image_id) else None
    if found is None:
        raise Http404("no such image")
    image, project, deployed, membership = found
    superuser = is_superuser(user)
    if membership is None and not superuser:
        raise Http404("no such image")  # a project the caller is not a member of
    project.deployed_version = deployed
    image.project = project
    role = ADMIN if superuser else membership.role
    if ROLE_RANK.get(role, 0) < ROLE_RANK[ANNOTATOR]:
        raise PermissionDenied(f"this needs the {ANNOTATOR} role in project {project.name!r}")
    return image


# --- one decoder thread per process --------------------------------------------------------------

_decoder_ident: int | None = None


def _remember_decoder_thread() -> None:
    global _decoder_ident
    _decoder_ident = threading.get_ident()


_decoder = ProcessThreadPool(
    workers=1, name="maskloop-decoder", initializer=_remember_decoder_thread
)


def on_decoder_thread(work: Callable[[], T]) -> T:
    """``work()`` run on this process's single decoder thread; its result or exception.

    Torch's CPU kernels use an OpenMP team of one thread per core, and each calling thread gets
    its own team, kept as long as the thread lives: gunicorn's request threads would keep
    several teams spinning on the same cores, so a decode served by another thread than the
    last one waited for the cores (vit_b, 2 cores: +15 ms alone). Even a team that sits idle
    costs: once a process's OpenMP threads outnumber the cores, libgomp stops spinning between
    parallel regions and sleeps, and every decode wakes its threads up (seed model, 2 cores,
    one other thread that had run a single parallel op: 17 -> 30 ms a decode). So every torch
    operation of a web process runs here, loading models and embeddings included; decodes
    queue here instead of oversubscribing the cores, while the requests' Python work
    (database, RLE, JSON) goes on in the request threads.
    """
    if threading.get_ident() == _decoder_ident:
        return work()  # already there (a decode inside a decode would wait for itself)
    global _in_flight
    with _in_flight_lock:
        _in_flight += 1
    try:
        return _decoder.get().submit(work).result()
    finally:
        with _in_flight_lock:
            _in_flight -= 1


_in_flight = 0  # on_decoder_thread calls waiting or running
_in_flight_lock = threading.Lock()
_WAKE_ELEMENTS = 1 << 16  # above torch's 32,768-element grain: the fill runs on the whole team
_wake_buffer: list[torch.Tensor] = []  # made on the decoder thread, like every tensor here


def _wake_team() -> None:
    if not _wake_buffer:
        _wake_buffer.append(torch.empty(_WAKE_ELEMENTS))
    _wake_buffer[0].fill_(0.0)


def decoder_wake() -> None:
    """Start waking the decoder thread and its OpenMP team now, when a decode request comes in,
    so that they are up by the time its prompt is parsed (no effect on any result).

    Between an annotator's clicks the process sleeps: the decoder thread waits on its queue and
    libgomp's threads stop spinning and sleep too, and on a virtual machine each wake-up of an
    idle core is slow. With 30 ms between clicks (seed model, 2-core VM) that added about 4 ms to
    the decoder call; waking them first, while Django authenticates and parses the request, took
    1.8 ms off the round trip. Skipped while a decode is waiting or running: the team is awake.
    """
    with _in_flight_lock:
        if _in_flight:
            return
    _decoder.get().submit(_wake_team)
