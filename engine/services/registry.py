"""The model registry: import a SAM checkpoint as a ModelVersion, deploy a version.

``model_version_import`` streams the file to a temporary folder (hashing it on the way), reads it
with the checked loader of ``engine.sam.checkpoint`` (``weights_only=True``: a pickle that would
run code is refused before it runs; zip members against their CRC-32; strict keys; architecture
detected or checked; no NaN or infinite weights), exports and verifies the ONNX decoder, stores
both as content-addressed blobs

    checkpoints/<sha256>.pth     the file, byte for byte
    onnx/<sha256>.onnx           prompt encoder + mask decoder (engine/sam/onnx_export.py)
    onnx/<sha256>.low_res.onnx   the same graph cut to iou_predictions + low_res_masks (the
                                 browser's decoder; derived on first request for versions
                                 imported before it existed: ``onnx_variant_key_ensure``)

and registers the row. The same file imported twice into a project returns the first row (an
``arch`` that contradicts the row's is refused, as on the first import). The heavy file work runs
outside any transaction; the row is written in a short one. Nothing is left half-done: on any
failure the blobs this call created are removed and no row exists.
"""

import datetime as dt
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.errors import DomainError
from annotation.models import Project
from engine.models import Job, ModelVersion
from engine.sam.checkpoint import (
    CheckpointError,
    LoadedCheckpoint,
    read_checkpoint,
    sam_from_state_dict,
)
from engine.sam.config import CONFIGS
from engine.sam.onnx_export import (
    DEFAULT_OPSET,
    check_decoder_onnx,
    export_decoder_onnx,
    low_res_decoder_onnx,
)
from engine.selectors import model_version_by_sha
from engine.services.deployments import DeployRefused as DeployRefused
from engine.services.deployments import deployment_switch
from engine.services.deployments import model_version_deploy as model_version_deploy
from engine.services.jobs import job_kind_active_since
from storage.blobs import BlobStore, get_blob_store

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class CheckpointRejected(DomainError):
    """The file is not a usable SAM checkpoint (the message says why); nothing was stored."""

    code = "checkpoint_rejected"


def checkpoint_key(sha256: str) -> str:
    return f"checkpoints/{sha256}.pth"


def onnx_decoder_key(sha256: str) -> str:
    return f"onnx/{sha256}.onnx"


ONNX_VARIANTS = ("official", "low_res")


def onnx_variant_key(decoder_key: str, variant: str) -> str:
    """Blob key of ``variant`` of the decoder stored at ``decoder_key`` (content-addressed
    alongside it)."""
    if variant not in ONNX_VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r}; known: {list(ONNX_VARIANTS)}")
    if variant == "official":
        return decoder_key
    return f"{decoder_key.removesuffix('.onnx')}.{variant}.onnx"


def onnx_variant_key_ensure(*, version: ModelVersion, variant: str) -> str:
    """The blob key of the version's decoder ``variant``, deriving and storing the low-res
    variant from the official export when it is missing (versions imported before it existed).

    The derivation is a pure graph cut (no torch, no model loaded), deterministic, so two
    requests racing here write the same bytes to the same key.
    """
    key = onnx_variant_key(version.onnx_decoder_key, variant)
    if variant == "official":
        return key
    store = get_blob_store()
    if not store.exists(key):
        derived = low_res_decoder_onnx(store.get_bytes(version.onnx_decoder_key))
        store.put_bytes(key, derived, content_type="application/octet-stream")
        logger.info("derived the %s ONNX decoder of model version %s", variant, version.pk)
    return key


def model_version_import(
    *,
    project: Project,
    path_or_file: str | Path | BinaryIO,
    arch: str | None = None,
    name: str = "",
    deploy: bool = False,
    user: User | None = None,
    parent: ModelVersion | None = None,
    round_number: int | None = None,
    extra_metrics: dict[str, object] | None = None,
) -> ModelVersion:
    """Validate, store and register a checkpoint (official ``sam_vit_*`` or ours).

    ``path_or_file`` is a local path or a binary file object read from its current position.
    Raises CheckpointRejected (nothing stored) for a file that is not a loadable SAM checkpoint
    or does not match ``arch``; the message is the checked loader's.

    A retrain round registers its result the same way, naming the ``parent`` version it trained
    from, its ``round_number`` and ``extra_metrics`` (validation, training) that are stored
    beside the registry's own (``onnx_decoder``, ``file_bytes``).
    """
    if parent is not None and parent.project_id != project.pk:
        raise CheckpointRejected(f"parent version {parent.pk} is not in project {project.name!r}")
    if project.pk is None:
        raise CheckpointRejected("the project is not saved")
    if arch is not None and arch not in CONFIGS:
        raise CheckpointRejected(f"unknown architecture {arch!r}; known: {sorted(CONFIGS)}")
    display = _display_name(path_or_file)
    since = timezone.now()
    with _staged(path_or_file, display) as (path, sha256):
        existing = model_version_by_sha(project=project, sha256=sha256)
        if existing is not None:
            # The same bytes were checked on their first import: only ``arch`` is new here, and
            # the version's stored architecture answers it without reading the file again.
            if arch is not None and arch != existing.arch:
                raise CheckpointRejected(f"{display}: checkpoint is {existing.arch}, not {arch}")
            logger.info("checkpoint %s is already version %s of %s", sha256, existing.pk, project)
            return _deploy_imported(existing, user=user) if deploy else existing
        loaded = _read(path, arch=arch, display=display)
        store = get_blob_store()
        created: list[str] = []
        try:
            onnx_key, onnx_metrics = _publish(store, path, sha256, loaded, created, display)
            version = _register(
                project=project,
                sha256=sha256,
                loaded=loaded,
                name=name or display,
                onnx_key=onnx_key,
                metrics={
                    **(extra_metrics or {}),
                    "onnx_decoder": onnx_metrics,
                    "file_bytes": path.stat().st_size,
                },
                parent=parent,
                round_number=round_number,
            )
            _files_restore(store, path, sha256, onnx_key, since=since)
        except BaseException:
            for key in created:
                store.delete(key)
            raise
    logger.info("imported %s as model version %s of %s (by %s)", display, version.pk, project, user)
    return _deploy_imported(version, user=user) if deploy else version


def _files_restore(
    store: BlobStore, path: Path, sha256: str, onnx_key: str, *, since: dt.datetime
) -> None:
    """The checkpoint's files may have been shared with a version of a project deleted while
    this import ran (its purge deletes them when no version has the sha256 at its check):
    once registered, store again any that went, from the staged files."""
    if not job_kind_active_since(kinds=[Job.Kind.DELETE_PROJECT], since=since):
        return
    staged = {
        checkpoint_key(sha256): path,
        onnx_key: path.with_suffix(".onnx"),
        onnx_variant_key(onnx_key, "low_res"): path.with_suffix(".low_res.onnx"),
    }
    for key, file in staged.items():
        if not store.exists(key) and file.is_file():
            with file.open("rb") as handle:
                store.put_file(key, handle, content_type="application/octet-stream")
            logger.warning(
                "%s was deleted with another project during this import; stored again", key
            )


def _display_name(path_or_file: str | Path | BinaryIO) -> str:
    if isinstance(path_or_file, str | Path):
        return Path(path_or_file).name
    return Path(str(getattr(path_or_file, "name", "") or "upload.pth")).name


@contextmanager
def _staged(source: str | Path | BinaryIO, display: str) -> Iterator[tuple[Path, str]]:
    """Copy ``source`` into a private temporary folder; yield (path, sha256)."""
    limit = int(settings.MASKLOOP_MAX_CHECKPOINT_BYTES)
    root = Path(settings.VAR_DIR) / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix="import-") as folder:
        path = Path(folder) / "checkpoint.pth"  # never a name from the upload
        digest = hashlib.sha256()
        written = 0
        if isinstance(source, str | Path):
            if not Path(source).is_file():
                raise CheckpointRejected(f"{source}: no such file")
            handle: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed below
        else:
            handle = source
        try:
            with path.open("wb") as out:
                while chunk := handle.read(_CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise CheckpointRejected(
                            f"{display}: larger than the {limit} byte limit "
                            "(MASKLOOP_MAX_CHECKPOINT_BYTES)"
                        )
                    digest.update(chunk)
                    out.write(chunk)
        finally:
            if handle is not source:
                handle.close()
        if written == 0:
            raise CheckpointRejected(f"{display}: not a checkpoint (the file is empty)")
        yield path, digest.hexdigest()


def _read(path: Path, *, arch: str | None, display: str) -> LoadedCheckpoint:
    try:
        return read_checkpoint(path, arch=arch)
    except CheckpointError as exc:
        # The loader names the staged copy; the user knows the file by its own name.
        message = str(exc).replace(str(path), display)
        raise CheckpointRejected(message) from exc


def _put_once(store: BlobStore, key: str, path: Path, created: list[str]) -> None:
    """Content-addressed: a key that exists holds these bytes already (and may be shared)."""
    if store.exists(key):
        return
    with path.open("rb") as handle:
        store.put_file(key, handle, content_type="application/octet-stream")
    created.append(key)


def _publish(
    store: BlobStore,
    path: Path,
    sha256: str,
    loaded: LoadedCheckpoint,
    created: list[str],
    display: str,
) -> tuple[str, dict[str, object]]:
    """Store the checkpoint and its verified ONNX decoder (and the decoder's low-res variant);
    return (onnx key, check figures)."""
    sam = sam_from_state_dict(loaded.state_dict, loaded.config)
    onnx_path = path.with_suffix(".onnx")
    export_decoder_onnx(sam, onnx_path, opset=DEFAULT_OPSET)
    try:
        check = check_decoder_onnx(sam, onnx_path, opset=DEFAULT_OPSET)
    except ValueError as exc:
        # The check feeds the decoder's own output back as a mask prompt; finite weights large
        # enough to overflow make it NaN or infinite, which the prompt validation refuses.
        raise CheckpointRejected(
            f"{display}: the mask decoder gives unusable outputs on the check's prompts ({exc})"
        ) from exc
    low_res_path = path.with_suffix(".low_res.onnx")
    low_res_path.write_bytes(low_res_decoder_onnx(onnx_path.read_bytes()))
    _put_once(store, checkpoint_key(sha256), path, created)
    key = onnx_decoder_key(sha256)
    _put_once(store, key, onnx_path, created)
    _put_once(store, onnx_variant_key(key, "low_res"), low_res_path, created)
    return key, check.as_dict()


@transaction.atomic
def _register(
    *,
    project: Project,
    sha256: str,
    loaded: LoadedCheckpoint,
    name: str,
    onnx_key: str,
    metrics: dict[str, object],
    parent: ModelVersion | None = None,
    round_number: int | None = None,
) -> ModelVersion:
    try:
        with transaction.atomic():  # a savepoint: a lost race leaves the outer block usable
            version = ModelVersion.objects.create(
                project=project,
                name=name[:200],
                arch=loaded.arch,
                config=loaded.config.to_dict(),
                checkpoint_key=checkpoint_key(sha256),
                sha256=sha256,
                onnx_decoder_key=onnx_key,
                metrics=metrics,
                parent=parent,
                round=round_number,
            )
    except IntegrityError:
        existing = model_version_by_sha(project=project, sha256=sha256)
        if existing is None:
            raise
        version = existing
    return version


def _deploy_imported(version: ModelVersion, *, user: User | None) -> ModelVersion:
    """``deploy=True``: a real deployment (history row, embeddings queued); importing the
    deployed file again changes nothing."""
    return deployment_switch(
        version=version, user=user, reason="deployed at import", refuse_same=False
    )
