"""Running a round in process: train, evaluate, register; cancel; crashes; out of memory."""

import hashlib
import os
import signal
from pathlib import Path

import pytest
import torch

from annotation.models import Mask
from engine.models import Job, ModelVersion
from engine.services.jobs import job_cancel
from storage.blobs import get_blob_store
from tests.training.rounds_data import FAST, add_scenes, deployed_parent
from training.models import RoundSettings, TrainingRound
from training.services import round_run as run_module
from training.services.round_run import round_run, round_run_here, state_key, work_dir_for
from training.services.rounds import round_launch
from training.tasks import MAX_RETRIES, gpu_train_round

pytestmark = pytest.mark.django_db


@pytest.fixture
def ready(project):
    """cats with 4 scenes of 3 accepted masks each, vit_tiny deployed, min_masks 5."""
    parent = deployed_parent(project)
    add_scenes(project, [1, 2, 3, 4], max_masks=3)
    RoundSettings.objects.create(project=project, min_masks=5)
    return project, parent


def _launch(project, admin_user, **overrides):
    return round_launch(project=project, user=admin_user, overrides={**FAST, **overrides})


def test_a_round_trains_evaluates_and_registers_a_child_version(ready, admin_user):
    project, parent = ready
    training_round = _launch(project, admin_user)
    # Rejected by a reviewer after the launch: left out of the training set.
    rejected = training_round.train_mask_ranges[0][0]
    Mask.objects.filter(pk=rejected).update(status=Mask.Status.REJECTED)
    done = round_run(job_id=training_round.job_id)
    assert done is not None
    assert done.job.status == Job.Status.SUCCEEDED, done.job.error
    version = done.produced_version
    assert version is not None
    assert version.pk != parent.pk
    assert (version.parent_id, version.round, version.arch) == (parent.pk, 1, "vit_tiny")
    store = get_blob_store()
    assert hashlib.sha256(store.get_bytes(version.checkpoint_key)).hexdigest() == version.sha256
    assert store.exists(version.onnx_decoder_key)
    metrics = version.metrics
    for key in ("validation", "parent_validation"):
        assert {"miou@1", "miou@3", "miou@5", "miou_box", "clicks_to_0.9"} <= set(metrics[key])
        assert metrics[key]["masks"] == training_round.validation_masks > 0
    assert metrics["parent_validation"] == done.parent_metrics
    training = metrics["training"]
    assert (training["steps"], training["round"], training["scope"]) == (2, 1, "decoder")
    assert training["masks"] == training_round.train_masks == 9
    assert training["masks_used"] == 8
    assert [step for step, _ in training["loss_curve"]] == [1, 2]
    assert training["final_loss"] == training["loss_curve"][-1][1] > 0
    assert training["resumed_from_step"] == 0
    assert done.loss_curve == training["loss_curve"]
    assert "onnx_decoder" in metrics
    assert metrics["file_bytes"] > 0
    # Registered, not deployed (auto-promotion is off); the work dir and state are gone.
    project.refresh_from_db()
    assert project.deployed_version_id == parent.pk
    assert not work_dir_for(done.pk).exists()
    assert not store.exists(state_key(done.pk))
    assert done.job.result["model_version_id"] == version.pk
    # The documented result keys are all there, auto-promotion off included.
    assert (done.job.result["auto_promote"], done.job.result["promoted"]) == (False, False)
    assert done.job.progress_done == done.job.progress_total == 2


def test_a_cancelled_round_stops_and_registers_nothing(ready, admin_user, monkeypatch):
    project, _ = ready
    monkeypatch.setattr(run_module, "WRITE_EVERY_S", 0.0)
    training_round = _launch(project, admin_user, steps=50)
    versions = ModelVersion.objects.count()

    def cancel_at_step_2(progress):
        if progress.step == 2:
            job_cancel(job_id=training_round.job_id)

    done = round_run(job_id=training_round.job_id, on_progress=cancel_at_step_2)
    assert done is not None
    assert done.job.status == Job.Status.CANCELLED
    assert done.job.progress_done < 50
    assert done.produced_version is None
    assert ModelVersion.objects.count() == versions
    assert not work_dir_for(done.pk).exists()
    assert not get_blob_store().exists(state_key(done.pk))


def test_a_round_on_an_image_that_no_longer_decodes_fails_and_changes_nothing(ready, admin_user):
    project, parent = ready
    training_round = _launch(project, admin_user)
    image = Mask.objects.get(pk=training_round.train_mask_ranges[0][0]).image
    get_blob_store().put_bytes(image.blob_key, b"not an image any more")
    versions = set(ModelVersion.objects.values_list("pk", flat=True))
    done = round_run(job_id=training_round.job_id)
    assert done is not None
    assert done.job.status == Job.Status.FAILED
    assert done.job.error == (
        f"ValueError: image {image.pk} ({image.file_name}): its stored file no longer decodes "
        "(UnidentifiedImageError)"
    )
    assert set(ModelVersion.objects.values_list("pk", flat=True)) == versions
    project.refresh_from_db()
    assert project.deployed_version_id == parent.pk
    assert not work_dir_for(done.pk).exists()


def test_a_crash_after_checkpoints_fails_the_job_and_removes_its_blobs(
    ready, admin_user, monkeypatch
):
    project, _ = ready
    training_round = _launch(project, admin_user)
    uploaded: list[bool] = []
    real_train = run_module.train

    def train_then_crash(*args, **kwargs):
        real_train(*args, **kwargs)
        uploaded.append(get_blob_store().exists(state_key(training_round.pk)))
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(run_module, "train", train_then_crash)
    blobs_before = set(get_blob_store().list())
    done = round_run(job_id=training_round.job_id)
    assert uploaded == [True]  # the state had been uploaded before the crash
    assert done is not None
    assert done.job.status == Job.Status.FAILED
    assert done.job.error == "RuntimeError: disk on fire"
    assert set(get_blob_store().list()) == blobs_before
    assert not work_dir_for(done.pk).exists()
    assert ModelVersion.objects.filter(round__isnull=False).count() == 0


def test_a_diverged_round_fails_naming_its_non_finite_weights(ready, admin_user, monkeypatch):
    project, parent = ready
    training_round = _launch(project, admin_user)
    real_train = run_module.train

    def train_then_diverge(model, *args, **kwargs):
        result = real_train(model, *args, **kwargs)
        with torch.no_grad():  # what a NaN loss does: every weight it updates becomes NaN
            for parameter in model.parameters():
                parameter.fill_(float("nan"))
        return result

    monkeypatch.setattr(run_module, "train", train_then_diverge)
    blobs_before = set(get_blob_store().list())
    done = round_run(job_id=training_round.job_id)
    assert done is not None
    assert done.job.status == Job.Status.FAILED
    assert done.job.error.startswith(
        "CheckpointRejected: child.pth: non-finite weights (NaN or infinity) in "
        "image_encoder.pos_embed (262144 of 262144 values); "
    )
    assert done.job.error.endswith("more tensors")
    assert set(get_blob_store().list()) == blobs_before
    assert list(ModelVersion.objects.all()) == [parent]
    project.refresh_from_db()
    assert project.deployed_version_id == parent.pk


def test_out_of_memory_fails_with_advice_and_is_not_retried(ready, admin_user, monkeypatch):
    project, _ = ready
    training_round = _launch(project, admin_user)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(run_module, "train", out_of_memory)
    outcome = gpu_train_round.apply(args=(training_round.job_id,))
    assert outcome.state == "SUCCESS"  # handled: no retry was scheduled
    job = Job.objects.get(pk=training_round.job_id)
    assert job.status == Job.Status.FAILED
    assert job.error.startswith("out of memory (OutOfMemoryError): lower masks_per_image (now 2)")
    assert job.attempts == 1
    assert ModelVersion.objects.filter(round__isnull=False).count() == 0


def test_a_transient_error_is_retried_with_the_state_kept_then_fails(
    ready, admin_user, monkeypatch
):
    from storage.blobs import BlobStoreUnavailable

    project, _ = ready
    training_round = _launch(project, admin_user)
    state_seen: list[bool] = []

    def unreachable(*args, **kwargs):
        state = Path(kwargs["work_dir"]) / "state.pt"
        state_seen.append(state.exists())
        state.write_bytes(b"kept for the retry")
        raise BlobStoreUnavailable("connection refused")

    monkeypatch.setattr(run_module, "train", unreachable)
    gpu_train_round.apply(args=(training_round.job_id,))  # eager: retries run at once
    # Every retry found the previous attempt's state; after the last one the job failed.
    assert state_seen == [False] + [True] * MAX_RETRIES
    job = Job.objects.get(pk=training_round.job_id)
    assert job.status == Job.Status.FAILED
    assert job.error == "BlobStoreUnavailable: connection refused"
    assert job.attempts == MAX_RETRIES + 1
    assert not work_dir_for(training_round.pk).exists()
    assert TrainingRound.objects.get(pk=training_round.pk).produced_version is None


def test_an_interrupted_in_process_round_fails_its_job_and_frees_the_project(
    ready, admin_user, monkeypatch
):
    project, _ = ready
    training_round = _launch(project, admin_user)

    def interrupted(*args, **kwargs):
        (Path(kwargs["work_dir"]) / "state.pt").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        round_run_here(job_id=training_round.job_id)
    job = Job.objects.get(pk=training_round.job_id)
    assert job.status == Job.Status.FAILED
    assert job.error == "interrupted (KeyboardInterrupt) while running here"
    assert not work_dir_for(training_round.pk).exists()
    # The next launch is not blocked by a job nobody runs any more.
    assert _launch(project, admin_user).number == 2


def test_sigterm_stops_an_in_process_round_with_its_job_failed(ready, admin_user, monkeypatch):
    project, _ = ready
    training_round = _launch(project, admin_user)
    handler_before = signal.getsignal(signal.SIGTERM)

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM should have stopped the round")

    monkeypatch.setattr(run_module, "train", terminated)
    with pytest.raises(SystemExit) as stopped:
        round_run_here(job_id=training_round.job_id)
    assert stopped.value.code == 128 + signal.SIGTERM
    job = Job.objects.get(pk=training_round.job_id)
    assert (job.status, job.error) == (
        Job.Status.FAILED,
        "interrupted (SystemExit) while running here",
    )
    assert signal.getsignal(signal.SIGTERM) == handler_before


def test_a_transient_error_in_process_fails_the_job_at_once(ready, admin_user, monkeypatch):
    from storage.blobs import BlobStoreUnavailable

    project, _ = ready
    training_round = _launch(project, admin_user)
    calls: list[int] = []

    def unreachable(*args, **kwargs):
        calls.append(1)
        raise BlobStoreUnavailable("connection refused")

    monkeypatch.setattr(run_module, "train", unreachable)
    done = round_run_here(job_id=training_round.job_id)
    assert calls == [1]  # nothing retries an in-process round
    assert done is not None
    assert (done.job.status, done.job.error) == (
        Job.Status.FAILED,
        "BlobStoreUnavailable: connection refused",
    )
    assert not work_dir_for(training_round.pk).exists()


def test_an_in_process_round_that_succeeds_stays_succeeded(ready, admin_user):
    project, _ = ready
    training_round = _launch(project, admin_user)
    done = round_run_here(job_id=training_round.job_id)
    assert done is not None
    assert done.job.status == Job.Status.SUCCEEDED, done.job.error
    assert done.produced_version is not None
    assert round_run_here(job_id=training_round.job_id) is None  # finished: nothing to do
