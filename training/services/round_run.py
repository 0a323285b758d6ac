"""The body of a round's ``gpu`` task: train, evaluate, register (issue 5, item 4).

Steps, each visible in the job's message:

1. load the parent checkpoint from the blob store (checked loader, sha256 verified);
2. build the samples: the snapshot's masks (minus any rejected since launch) decoded from RLE,
   on their images; the validation samples from the frozen split's snapshot;
3. evaluate the parent on the validation split (once: stored on the round, so a resumed round
   does not redo it);
4. train with ``training.loop.trainer.train`` in ``VAR_DIR/training/round-<id>``. Progress
   and the loss curve reach the database at most once a second; every resumable state the
   trainer saves is uploaded to the blob store (``training/rounds/<id>/state.pt``), so a
   worker on another host resumes where a killed one stopped;
5. evaluate the child, save it, register it with ``model_version_import`` (checkpoint + ONNX
   decoder blobs with sha256, parent, round, metrics), auto-promote when the project says so,
   succeed the job, remove the work dir and the state blob.

Failures: a cancelled job stops at the next step and cleans up; out of memory fails the job
with advice and is not retried; a transient error (blob store or database unreachable) is
re-raised with the work dir and state kept, for the task to retry and resume; any other error
fails the job with its message. In every failure the registry and the deployment are as they
were and the round's blobs are removed (the registry removes its own on a failed import).
"""

import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from annotation.models import Project
from engine.inference import inference_device
from engine.models import Job, ModelVersion
from engine.sam.checkpoint import load_sam, save_sam
from engine.sam.config import SamConfig
from engine.sam.modeling import Sam
from engine.services.jobs import (
    JobCancelled,
    job_fail,
    job_start,
    job_succeed,
    process_identity,
)
from engine.services.registry import model_version_import
from storage.blobs import BlobNotFound, BlobStoreUnavailable, get_blob_store
from training.loop.data import TrainSample
from training.loop.evaluate import evaluate
from training.loop.trainer import TrainProgress, TrainResult, train
from training.models import TrainingRound
from training.selectors import round_for_job, round_settings_get
from training.services.rounds import config_from_dict
from training.services.snapshot import samples_from_masks, snapshot_masks

logger = logging.getLogger(__name__)

# Errors that say "try again later", not "this round cannot work": the task retries them and
# the work dir and uploaded state are kept for the resumed attempt.
RETRYABLE: tuple[type[Exception], ...] = (
    BlobStoreUnavailable,
    OperationalError,
    InterfaceError,
)
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)
CURVE_POINTS = 200  # loss-curve points kept on the round and in the metrics
WRITE_EVERY_S = 1.0  # progress writes to the database, at most this often
_CHUNK = 1 << 20


def state_key(round_id: int) -> str:
    return f"training/rounds/{round_id}/state.pt"


def work_dir_for(round_id: int) -> Path:
    return Path(settings.VAR_DIR) / "training" / f"round-{round_id}"


def downsample(curve: list[list[float]], points: int = CURVE_POINTS) -> list[list[float]]:
    """At most ``points`` evenly spaced entries of ``curve``, always keeping the last."""
    if len(curve) <= points:
        return curve
    stride = len(curve) / points
    picked = [curve[int(i * stride)] for i in range(points - 1)]
    return [*picked, curve[-1]]


def out_of_memory_message(exc: BaseException, config: dict[str, Any]) -> str:
    return (
        f"out of memory ({type(exc).__name__}): lower masks_per_image (now "
        f"{config.get('masks_per_image')}) or images_per_step (now "
        f"{config.get('images_per_step')}), train a smaller scope than {config.get('scope')!r}, "
        "or use a device with more memory; the round was not retried"
    )


class _Progress:
    """The trainer's callbacks: throttled progress + loss curve, cancellation, state upload."""

    def __init__(
        self,
        training_round: TrainingRound,
        extra: Callable[[TrainProgress], None] | None,
    ) -> None:
        self.round = training_round
        self.extra = extra
        self.curve: dict[int, float] = {int(s): float(v) for s, v in training_round.loss_curve}
        self.cancelled = False
        self.last_write = 0.0
        self.last_poll = 0.0
        self.first_step: int | None = None  # the first step this attempt trained

    def curve_points(self) -> list[list[float]]:
        return downsample([[step, self.curve[step]] for step in sorted(self.curve)])

    def on_progress(self, progress: TrainProgress) -> None:
        if self.first_step is None:
            self.first_step = progress.step
        self.curve[progress.step] = float(progress.loss)
        if self.extra is not None:
            self.extra(progress)
        now = time.monotonic()
        if now - self.last_write < WRITE_EVERY_S and progress.step < progress.total_steps:
            return
        self.last_write = self.last_poll = now
        TrainingRound.objects.filter(pk=self.round.pk).update(
            loss_curve=self.curve_points(), updated_at=timezone.now()
        )
        try:
            _report(
                self.round.job_id,
                f"training: step {progress.step} of {progress.total_steps}, loss "
                f"{progress.loss:.4f}, IoU {progress.iou:.3f}",
                progress_done=progress.step,
                progress_total=progress.total_steps,
            )
        except JobCancelled:
            self.cancelled = True

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.last_poll >= WRITE_EVERY_S:
            self.last_poll = now
            self.cancelled = Job.objects.filter(
                pk=self.round.job_id, status=Job.Status.CANCELLED
            ).exists()
        return self.cancelled

    def on_checkpoint(self, path: Path) -> None:
        with path.open("rb") as handle:
            get_blob_store().put_file(state_key(self.round.pk), handle)


def _report(job_id: int, message: str, **progress: int) -> None:
    """Message, heartbeat and progress of a job that is still running; raises JobCancelled
    (and writes nothing, keeping the cancel's own message) once it was cancelled."""
    updated = (
        Job.objects.filter(pk=job_id)
        .exclude(status=Job.Status.CANCELLED)
        .update(
            message=message[:500],
            heartbeat_at=timezone.now(),
            runner=process_identity(),
            **progress,
        )
    )
    if not updated:
        raise JobCancelled(f"job {job_id} was cancelled")


def _message(training_round: TrainingRound, text: str) -> None:
    _report(training_round.job_id, text)


def _load_parent(version: ModelVersion, work_dir: Path) -> Sam:
    path = work_dir / "parent.pth"
    if not path.is_file():
        partial = path.with_suffix(".part")
        with get_blob_store().open(version.checkpoint_key) as src, partial.open("wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
        partial.replace(path)
    return load_sam(path, arch=version.arch, expected_sha256=version.sha256)


def _restore_state(training_round: TrainingRound, work_dir: Path) -> bool:
    """Put the last uploaded training state in the work dir (unless a local one is there)."""
    local = work_dir / "state.pt"
    if local.is_file():
        return True
    try:
        with get_blob_store().open(state_key(training_round.pk)) as src:
            partial = local.with_suffix(".part")
            with partial.open("wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            partial.replace(local)
    except BlobNotFound:
        return False
    return True


def _samples(training_round: TrainingRound, ranges: list[list[int]]) -> list[TrainSample]:
    return samples_from_masks(snapshot_masks(project=training_round.project, ranges=ranges))


def _evaluate(model: Sam, samples: list[TrainSample], device: torch.device) -> dict[str, Any]:
    was_training = model.training
    model.eval()
    try:
        return dict(evaluate(model, samples, device=device).to_dict())
    finally:
        model.train(was_training)


def _cleanup(training_round: TrainingRound) -> None:
    shutil.rmtree(work_dir_for(training_round.pk), ignore_errors=True)
    get_blob_store().delete(state_key(training_round.pk))  # a missing key is fine


def _train_and_register(
    training_round: TrainingRound, on_progress: Callable[[TrainProgress], None] | None
) -> ModelVersion | None:
    """Steps 1-5 of the module docstring; None when the round was cancelled meanwhile."""
    work_dir = work_dir_for(training_round.pk)
    work_dir.mkdir(parents=True, exist_ok=True)
    parent = training_round.parent_version
    device = inference_device()
    _message(training_round, "loading the parent model and the snapshot")
    model = _load_parent(parent, work_dir).to(device)
    train_samples = _samples(training_round, training_round.train_mask_ranges)
    validation = _samples(training_round, training_round.validation_mask_ranges)
    if not train_samples:
        raise ValueError("no masks of the snapshot are left to train on (rejected or deleted)")
    if not training_round.parent_metrics:
        _message(training_round, "evaluating the parent on the validation split")
        training_round.parent_metrics = _evaluate(model, validation, device)
        TrainingRound.objects.filter(pk=training_round.pk).update(
            parent_metrics=training_round.parent_metrics
        )
    resumed = _restore_state(training_round, work_dir)
    config = config_from_dict(training_round.config)
    _message(training_round, "resuming training" if resumed else "training")
    progress = _Progress(training_round, on_progress)
    result: TrainResult = train(
        model,
        train_samples,
        config,
        work_dir=work_dir,
        device=device,
        on_progress=progress.on_progress,
        on_checkpoint=progress.on_checkpoint,
        should_stop=progress.should_stop,
    )
    if result.stopped or progress.should_stop():
        return None
    for step, loss in result.loss_curve:
        progress.curve[int(step)] = float(loss)
    curve = progress.curve_points()
    TrainingRound.objects.filter(pk=training_round.pk).update(loss_curve=curve)
    _message(training_round, "evaluating the new model on the validation split")
    child_metrics = _evaluate(model, validation, device)
    _message(training_round, "registering the new model version")
    metrics = {
        "validation": child_metrics,
        "parent_validation": training_round.parent_metrics,
        "training": {
            "steps": result.steps_done,
            "masks": training_round.train_masks,
            "images": len(train_samples),
            "masks_used": sum(len(sample.masks) for sample in train_samples),
            "seconds": result.seconds,
            "masks_per_second": result.masks_per_second,
            "final_loss": curve[-1][1] if curve else None,
            "loss_curve": curve,
            "scope": config.scope,
            "round": training_round.number,
            "resumed_from_step": (
                (progress.first_step or result.steps_done + 1) - 1 if resumed else 0
            ),
        },
    }
    child_path = work_dir / "child.pth"
    save_sam(model.cpu(), child_path, arch=parent.arch, config=SamConfig.from_dict(parent.config))
    return model_version_import(
        project=training_round.project,
        path_or_file=child_path,
        arch=parent.arch,
        name=f"round {training_round.number}",
        parent=parent,
        round_number=training_round.number,
        extra_metrics=metrics,
    )


def _auto_promote(project: Project, version: ModelVersion) -> dict[str, Any]:
    round_settings = round_settings_get(project=project)
    if not round_settings.auto_promote:
        return {"auto_promote": False, "promoted": False}  # the key is always there (docs)
    from training.services.promotion import version_auto_promote  # R2's module, loaded late

    try:
        promoted = version_auto_promote(version=version, margin=round_settings.promote_margin)
    except Exception as exc:  # the version is registered and fine; report, do not fail
        logger.exception("auto-promotion of version %s failed", version.pk)
        return {"auto_promote": True, "promoted": False, "promotion_error": str(exc)}
    return {"auto_promote": True, "promoted": promoted}


def round_run(
    *,
    job_id: int,
    task_id: str = "",
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> TrainingRound | None:
    """Run (or resume) the round of ``job_id``; None when its job had finished already.

    ``on_progress`` is called on every step as well (the CLI's progress bar). Raises only the
    ``RETRYABLE`` errors (the job stays running, the state is kept for the retry).
    """
    if job_start(job_id=job_id, task_id=task_id) is None:
        return None
    training_round = round_for_job(job_id=job_id)
    try:
        version = _train_and_register(training_round, on_progress)
    except JobCancelled:
        version = None
    except OUT_OF_MEMORY as exc:
        _cleanup(training_round)
        job_fail(job_id=job_id, error=out_of_memory_message(exc, training_round.config))
        return _refreshed(training_round)
    except RETRYABLE:
        logger.warning("round %s hit a transient error; state kept", training_round, exc_info=True)
        raise
    except Exception as exc:
        _cleanup(training_round)
        job_fail(job_id=job_id, error=exc)
        return _refreshed(training_round)
    if version is None:
        logger.info("round %s was cancelled", training_round)
        _cleanup(training_round)
        return _refreshed(training_round)
    TrainingRound.objects.filter(pk=training_round.pk).update(produced_version=version)
    promotion = _auto_promote(training_round.project, version)
    job_succeed(
        job_id=job_id,
        result={
            "round": training_round.number,
            "model_version_id": version.pk,
            "validation": version.metrics.get("validation"),
            "parent_validation": version.metrics.get("parent_validation"),
            **promotion,
        },
        message=f"round {training_round.number}: model version {version.pk} registered",
    )
    _cleanup(training_round)
    return _refreshed(training_round)


def round_run_here(
    *, job_id: int, on_progress: Callable[[TrainProgress], None] | None = None
) -> TrainingRound | None:
    """Run the round of ``job_id`` in this process, to the end (``launch_round --wait``, the
    engine benchmark); None when its job had finished already.

    No task retries or redelivers an in-process round, so nothing that stops it may leave its
    job ``running`` and block the project's next launch: a transient error fails the job at
    once, and so does the process being stopped (Ctrl-C, SIGTERM, ``SystemExit``), which then
    goes on stopping. The work dir and state are removed either way. Only a SIGKILL, which no
    process can catch, leaves the job running; cancel it (``POST /api/jobs/{id}/cancel/``).
    """
    previous = _raise_on_sigterm()
    try:
        return round_run(job_id=job_id, on_progress=on_progress)
    except RETRYABLE as exc:
        _fail_unless_finished(job_id, exc)
        return _refreshed(round_for_job(job_id=job_id))
    except BaseException as exc:
        _fail_unless_finished(job_id, f"interrupted ({type(exc).__name__}) while running here")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm() -> Any:
    """Make SIGTERM raise SystemExit (main thread only); returns the handler to restore."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, stop)


def _fail_unless_finished(job_id: int, error: BaseException | str) -> None:
    """round_fail, unless the job got to an end state (succeeded, failed, cancelled) first."""
    if Job.objects.filter(pk=job_id).exclude(status__in=Job.FINISHED).exists():
        round_fail(job_id=job_id, error=error)


def round_fail(*, job_id: int, error: BaseException | str) -> None:
    """Give up on a round (a transient error that outlived the task's retries): fail the job and
    remove the work dir and state."""
    _cleanup(round_for_job(job_id=job_id))
    job_fail(job_id=job_id, error=error)


def _refreshed(training_round: TrainingRound) -> TrainingRound:
    training_round.refresh_from_db()
    training_round.job.refresh_from_db()
    return training_round
