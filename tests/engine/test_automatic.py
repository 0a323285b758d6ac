"""Automatic runs in process: start, chunks, idempotency, failures, cancel/resume, pinning."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from annotation.models import Mask
from engine.models import AutomaticImage, Job
from engine.sam.amg import sa1b_generator_settings
from engine.services.automatic import (
    AutomaticRefused,
    InvalidAutomaticSettings,
    automatic_cancel,
    automatic_chunk_run,
    automatic_resume,
    automatic_start,
    project_automatic_settings_set,
    runner,
)
from engine.services.automatic.generation import RunGenerator
from engine.services.automatic.params import parse_assignments
from engine.services.embeddings import embedding_key, embedding_load
from engine.services.registry import model_version_deploy
from storage.blobs import get_blob_store
from tests.engine.automatic_helpers import (
    FAST,
    Queue,
    corrupt,
    deployed_project,
    masks_per_image,
    register_variant,
    rows,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(monkeypatch, django_capture_on_commit_callbacks, fresh_model_cache) -> Queue:
    return Queue(monkeypatch, django_capture_on_commit_callbacks)


def test_a_start_pins_the_deployed_version_and_queues_in_flight_chunks(queue, admin_user):
    project, version, images = deployed_project("start", 5)
    job = queue.call(
        automatic_start, project=project, user=admin_user, params=FAST, chunk=2, in_flight=2
    )
    assert (job.kind, job.status, job.progress_total) == ("automatic", "queued", 5)
    assert job.params["model_version_id"] == version.pk
    assert (job.params["source"], job.params["status"], job.params["stage"]) == (
        "automatic",
        "accepted",
        "fully_automatic",
    )
    assert rows(job) == {image.pk: "pending" for image in images}
    ids = [image.pk for image in images]
    assert queue.sent == [(job.pk, ids[0:2]), (job.pk, ids[2:4])]  # two in flight, not five


def test_the_sa1b_settings_are_the_default_under_project_and_run_overrides(queue, admin_user):
    project, _, _ = deployed_project("defaults", 1)
    project_automatic_settings_set(project=project, settings={"points_per_side": 16})
    job = queue.call(
        automatic_start, project=project, user=admin_user, params={"pred_iou_thresh": 0.9}
    )
    expected = {**sa1b_generator_settings(), "points_per_side": 16, "pred_iou_thresh": 0.9}
    for key, value in expected.items():
        assert job.params["settings"][key] == value, key
    assert job.params["settings"]["stability_score_thresh"] == 0.95
    assert job.params["settings"]["box_nms_thresh"] == 0.7


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"points_per_sides": 8}, "unknown setting"),
        ({"pred_iou_thresh": "high"}, "pred_iou_thresh must be a finite number"),
        ({"box_nms_thresh": 1.5}, r"box_nms_thresh must be in \[0, 1\]"),
        ({"points_per_side": 0}, "points_per_side must be an integer >= 1"),
        ({"max_mask_area_fraction": 0}, "max_mask_area_fraction"),
        ({"output_mode": "binary_mask"}, "unknown setting"),
        ({"points_per_side": 100_000}, "points_per_side must be at most 256"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_written(queue, admin_user, params, message):
    project, _, _ = deployed_project("bad settings", 1)
    with pytest.raises(InvalidAutomaticSettings, match=message):
        queue.call(automatic_start, project=project, user=admin_user, params=params)
    assert not Job.objects.exists()
    assert not AutomaticImage.objects.exists()
    assert queue.sent == []


def test_bad_project_settings_are_refused_when_stored(queue):
    project, _, _ = deployed_project("bad project settings", 1)
    with pytest.raises(InvalidAutomaticSettings, match="crop_n_layers"):
        project_automatic_settings_set(project=project, settings={"crop_n_layers": -1})
    project.refresh_from_db()
    assert project.automatic_settings == {}


def test_a_start_without_deployed_version_or_with_unknown_images_is_refused(queue, admin_user):
    project, _, images = deployed_project("refusals", 1)
    with pytest.raises(AutomaticRefused, match="no images 999999"):
        queue.call(automatic_start, project=project, user=admin_user, image_ids=[999999])
    with pytest.raises(AutomaticRefused, match="chunk must be"):
        queue.call(automatic_start, project=project, user=admin_user, chunk=0)
    project.deployed_version = None
    project.save()
    with pytest.raises(AutomaticRefused, match="no deployed model version"):
        queue.call(automatic_start, project=project, user=admin_user, image_ids=[images[0].pk])
    assert not Job.objects.exists()


def test_a_run_writes_every_images_masks_with_scores_and_finishes(queue, admin_user):
    project, version, images = deployed_project("full run", 3)
    job = queue.call(automatic_start, project=project, user=admin_user, params=FAST, chunk=2)
    queue.drain()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert (job.progress_done, job.progress_total) == (3, 3)
    assert set(rows(job).values()) == {"done"}
    masks = Mask.objects.filter(job=job)
    assert masks.count() == job.result["masks"] > 0
    assert set(masks_per_image(job)) == {image.pk for image in images}
    for mask in masks:
        assert (mask.source, mask.status, mask.stage) == (
            "automatic",
            "accepted",
            "fully_automatic",
        )
        assert mask.model_version_id == version.pk
        assert mask.predicted_iou is not None
        assert mask.stability_score is not None
        assert mask.point_coords is not None
        assert len(mask.point_coords) == 1
        assert mask.crop_box is not None
        assert len(mask.crop_box) == 4
    row = AutomaticImage.objects.filter(job=job).first()
    assert row is not None
    assert row.model_version_id == version.pk
    assert row.attempts == 1
    assert set(row.timings) >= {"encoder", "decoder", "postprocess", "db"}
    assert row.timings["decoder"] > 0
    assert row.timings["db"] > 0
    assert job.result["done"] == 3
    assert job.result["failed"] == 0
    assert job.result["images_per_s"] > 0


def test_a_repeated_chunk_writes_nothing_twice(queue, admin_user):
    project, _, _images = deployed_project("redelivery", 2)
    job = queue.call(automatic_start, project=project, user=admin_user, params=FAST, chunk=2)
    job_id, ids = queue.sent[0]
    queue.drain()
    before = sorted(Mask.objects.filter(job=job).values_list("id", flat=True))
    queue.call(automatic_chunk_run, job_id=job_id, image_ids=ids)  # the message again
    assert sorted(Mask.objects.filter(job=job).values_list("id", flat=True)) == before


def test_an_image_run_again_gets_its_masks_replaced_not_added(queue, admin_user):
    project, _, images = deployed_project("rerun image", 2)
    job = queue.call(automatic_start, project=project, user=admin_user, params=FAST)
    queue.drain()
    counts = masks_per_image(job)
    # As if the worker had stopped between its write and the ack, with the row left pending.
    AutomaticImage.objects.filter(job=job, image=images[0]).update(status="pending")
    Job.objects.filter(pk=job.pk).update(status="running", finished_at=None)
    old = set(Mask.objects.filter(job=job, image=images[0]).values_list("id", flat=True))
    queue.call(automatic_chunk_run, job_id=job.pk, image_ids=[images[0].pk])
    assert masks_per_image(job) == counts
    new = set(Mask.objects.filter(job=job, image=images[0]).values_list("id", flat=True))
    assert not old & new


def test_a_corrupt_image_fails_with_its_reason_and_the_run_goes_on(queue, admin_user):
    project, _, images = deployed_project("corrupt", 3)
    corrupt(images[1])
    job = queue.call(automatic_start, project=project, user=admin_user, params=FAST, chunk=3)
    queue.drain()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert rows(job) == {images[0].pk: "done", images[1].pk: "failed", images[2].pk: "done"}
    failed = AutomaticImage.objects.get(job=job, image=images[1])
    assert failed.error.startswith("the image cannot be read")
    assert (job.result["done"], job.result["failed"]) == (2, 1)
    assert "1 failed" in job.message
    assert images[1].pk not in masks_per_image(job)


def test_cancel_stops_after_the_current_image_and_resume_finishes_once(queue, admin_user):
    project, _, images = deployed_project("cancel resume", 4)
    job = queue.call(
        automatic_start, project=project, user=admin_user, params=FAST, chunk=4, in_flight=1
    )
    calls = {"n": 0}
    real = runner._image_run

    def cancel_after_first(**kwargs):
        real(**kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            automatic_cancel(job_id=job.pk)

    runner._image_run = cancel_after_first
    try:
        assert queue.run_one() is None
    finally:
        runner._image_run = real
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert list(rows(job).values()).count("done") == 1
    Job.objects.filter(pk=job.pk).update(status="running")
    with pytest.raises(AutomaticRefused, match="running"):
        automatic_resume(job_id=job.pk)
    Job.objects.filter(pk=job.pk).update(status="cancelled")
    job = queue.call(automatic_resume, job_id=job.pk)
    assert job.status == Job.Status.QUEUED
    assert job.progress_done == 1
    queue.drain()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert set(rows(job).values()) == {"done"}
    assert set(masks_per_image(job)) == {image.pk for image in images}
    assert job.result["done"] == 4
    assert Mask.objects.filter(job=job).count() == job.result["masks"]
    with pytest.raises(AutomaticRefused, match="no pending"):
        automatic_resume(job_id=job.pk)


def test_masks_keep_the_runs_version_when_the_deployment_changes(queue, admin_user, tmp_path):
    project, first, _images = deployed_project("pinned", 2)
    job = queue.call(
        automatic_start, project=project, user=admin_user, params=FAST, chunk=1, in_flight=1
    )
    queue.run_one()
    second = register_variant(project, tmp_path)
    model_version_deploy(project=project, version=second)
    queue.drain()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert set(Mask.objects.filter(job=job).values_list("model_version_id", flat=True)) == {
        first.pk
    }
    assert set(
        AutomaticImage.objects.filter(job=job).values_list("model_version_id", flat=True)
    ) == {first.pk}


def test_the_stored_embedding_is_reused_and_a_missing_one_stored(queue, admin_user):
    project, version, images = deployed_project("embeddings", 2)
    job = queue.call(automatic_start, project=project, user=admin_user, params=FAST)
    queue.drain()
    for image in images:
        assert embedding_load(image=image, model_version=version) is not None
    first = AutomaticImage.objects.filter(job=job).first()
    assert first is not None
    assert first.timings["encoder_runs"] == 1
    again = queue.call(automatic_start, project=project, user=admin_user, params=FAST)
    queue.drain()
    timings = AutomaticImage.objects.filter(job=again).values_list("timings", flat=True)
    assert [t["encoder_runs"] for t in timings] == [0, 0]
    assert all(t["encoder"] == 0 for t in timings)
    key = embedding_key(model_version_id=version.pk, image_sha256=images[0].sha256)
    assert get_blob_store().exists(key)


def test_a_prefill_run_proposes_masks_with_the_project_prefill_settings(queue, admin_user):
    project, _, _images = deployed_project("prefill", 1)
    project.prefill_settings = {"pred_iou_thresh": 0.0}
    project.save()
    job = queue.call(
        automatic_start,
        project=project,
        user=admin_user,
        mode="prefill",
        params={**FAST, "pred_iou_thresh": 0.95},
    )
    assert job.kind == "prefill"
    assert job.params["settings"]["pred_iou_thresh"] == 0.0  # the project's, over the caller's
    assert job.params["settings"]["crop_n_layers"] == 0  # no SA-1B crops for prefill
    queue.drain()
    masks = Mask.objects.filter(job=job)
    assert masks.exists()
    assert {(m.source, m.status, m.stage) for m in masks} == {
        ("prefill", "proposed", "semi_automatic")
    }


def test_an_image_its_worker_died_on_too_often_fails_and_resume_retries_it(queue, admin_user):
    project, _, images = deployed_project("attempts", 2)
    job = queue.call(automatic_start, project=project, user=admin_user, params=FAST)
    AutomaticImage.objects.filter(job=job, image=images[0]).update(attempts=runner.MAX_ATTEMPTS)
    queue.drain()
    job.refresh_from_db()
    assert rows(job)[images[0].pk] == "failed"
    assert AutomaticImage.objects.get(job=job, image=images[0]).error.startswith("interrupted: ")
    job = queue.call(automatic_resume, job_id=job.pk)
    queue.drain()
    job.refresh_from_db()
    assert set(rows(job).values()) == {"done"}
    assert (job.result["done"], job.result["failed"]) == (2, 0)


def test_resume_retries_corrupt_images_only_when_asked(queue, admin_user):
    project, _, images = deployed_project("retry failed", 1)
    corrupt(images[0])
    job = queue.call(automatic_start, project=project, user=admin_user, params=FAST)
    queue.drain()
    with pytest.raises(AutomaticRefused, match="no pending or retriable"):
        automatic_resume(job_id=job.pk)
    job = queue.call(automatic_resume, job_id=job.pk, retry_failed=True)
    assert rows(job) == {images[0].pk: "pending"}


def test_cli_assignments_are_read_as_json_values():
    assert parse_assignments(["points_per_side=16", "max_mask_area_fraction=none"]) == {
        "points_per_side": 16,
        "max_mask_area_fraction": None,
    }
    assert parse_assignments(["pred_iou_thresh=0.9", "x=abc"]) == {
        "pred_iou_thresh": 0.9,
        "x": "abc",
    }
    with pytest.raises(InvalidAutomaticSettings, match="key=value"):
        parse_assignments(["points_per_side"])


def test_empty_candidates_are_dropped_not_failing_the_image(queue, admin_user, monkeypatch):
    project, _, _ = deployed_project("empty candidates", 1)
    real = RunGenerator.generate_image

    def with_an_empty_one(self, pixels, *, stored):
        records, times, computed = real(self, pixels, stored=stored)
        height, width = pixels.shape[:2]
        empty = np.asfortranarray(np.zeros((height, width), dtype=np.uint8))
        blank = {**records[0], "segmentation": mask_utils.encode(empty), "area": 0}
        return [*records, blank], times, computed

    monkeypatch.setattr(RunGenerator, "generate_image", with_an_empty_one)
    job = queue.call(automatic_start, project=project, user=admin_user, params=FAST)
    queue.drain()
    row = AutomaticImage.objects.get(job=job)
    assert row.status == "done"
    assert Mask.objects.filter(job=job).count() == row.masks > 0
    assert not Mask.objects.filter(job=job, area=0).exists()
