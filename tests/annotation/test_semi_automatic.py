"""The semi-automatic stage: prefill runs and settings, rejecting prefilled masks in the tool,
done accepting the rest, stats counting prefill apart, and calibration on the validation split."""

import json
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from annotation.errors import LeaseTaken
from annotation.models import Image, ImageLease, Mask, Project, Stage
from annotation.selectors.stats import project_stats
from annotation.services.ingest import images_ingest_batch
from annotation.services.leases import image_lease_take, image_mark_done
from annotation.services.masks import mask_create
from annotation.services.prefill_calibration import MatchCounts, greedy_matches, rle_iou
from annotation.services.projects import membership_set
from annotation.services.semi_automatic import (
    PREFILL_DEFAULTS,
    PrefillRefused,
    prefill_calibrate,
    prefill_mask_reject,
    prefill_mask_restore,
    prefill_settings_resolved,
    prefill_settings_set,
    prefill_start,
    prefill_todo_image_ids,
)
from engine.models import AutomaticImage, Job
from engine.services.automatic import InvalidAutomaticSettings
from engine.services.jobs import job_cancel
from engine.services.registry import model_version_import
from tests.factories import client_for, png
from training.models import ValidationSplit

pytestmark = pytest.mark.django_db

TINY = Path(__file__).resolve().parents[1] / "engine" / "sam" / "goldens" / "tiny_sam.pth"
H, W = 30, 40


def square(y0: int, x0: int, side: int = 10) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


@pytest.fixture
def semi(project: Project) -> Project:
    """ "cats" in the semi-automatic stage with the tiny model deployed and three images."""
    images_ingest_batch(project=project, files=[(f"i{i}.png", png(i, W, H)) for i in range(3)])
    model_version_import(project=project, path_or_file=TINY, name="tiny", deploy=True)
    Project.objects.filter(pk=project.pk).update(stage=Stage.SEMI_AUTOMATIC)
    project.refresh_from_db()
    return project


def first_image(project: Project) -> Image:
    return Image.objects.filter(project=project).order_by("id")[0]


def prefilled(image: Image, at: np.ndarray, status: str = "proposed") -> Mask:
    return mask_create(
        image=image, binary=at, source="prefill", stage="semi_automatic", status=status
    )


# --- runs ------------------------------------------------------------------------------------


def test_prefill_start_covers_the_todo_images_with_the_strict_settings(semi, admin_user):
    images = list(Image.objects.filter(project=semi).order_by("id"))
    Image.objects.filter(pk=images[0].pk).update(status=Image.Status.DONE)
    job = prefill_start(project=semi, user=admin_user)
    assert job.kind == Job.Kind.PREFILL
    covered = set(AutomaticImage.objects.filter(job=job).values_list("image_id", flat=True))
    assert covered == {images[1].pk, images[2].pk}
    assert job.params["settings"]["pred_iou_thresh"] == PREFILL_DEFAULTS["pred_iou_thresh"]
    # While that run is live its images are not handed to a second run.
    with pytest.raises(PrefillRefused, match="prefilled already"):
        prefill_start(project=semi, user=admin_user)
    assert Job.objects.filter(kind=Job.Kind.PREFILL).count() == 1


def test_done_images_are_not_prefilled(semi, admin_user):
    image = first_image(semi)
    Image.objects.filter(pk=image.pk).update(status=Image.Status.DONE)
    with pytest.raises(PrefillRefused, match=f"images {image.pk} are done already"):
        prefill_start(project=semi, user=admin_user, image_ids=[image.pk])
    assert Job.objects.count() == 0


def test_images_of_a_cancelled_run_it_never_reached_come_back(semi, admin_user):
    job = prefill_start(project=semi, user=admin_user)
    first = AutomaticImage.objects.filter(job=job).order_by("image_id")[0]
    AutomaticImage.objects.filter(pk=first.pk).update(status=AutomaticImage.Status.DONE)
    job_cancel(job_id=job.pk)
    remaining = prefill_todo_image_ids(project=semi)
    assert first.image_id not in remaining
    assert len(remaining) == 2


def test_prefill_is_refused_outside_the_semi_automatic_stage(project, admin_user):
    images_ingest_batch(project=project, files=[("a.png", png(1, W, H))])
    with pytest.raises(PrefillRefused, match="only in the semi-automatic stage"):
        prefill_start(project=project, user=admin_user)
    assert Job.objects.count() == 0


def test_prefill_settings_are_validated_and_stored(semi, admin_user, annotator_user):
    prefill_settings_set(project=semi, settings={"pred_iou_thresh": 0.9}, user=admin_user)
    semi.refresh_from_db()
    assert semi.prefill_settings == {"pred_iou_thresh": 0.9}
    resolved = prefill_settings_resolved(project=semi)
    assert resolved["pred_iou_thresh"] == 0.9
    assert resolved["stability_score_thresh"] == PREFILL_DEFAULTS["stability_score_thresh"]
    for bad in ({"pred_iou": 0.9}, {"box_nms_thresh": 2.0}, {"points_per_side": 0},
                {"pred_iou_thresh": 5}, {"stability_score_thresh": -3},
                {"stability_score_offset": 0}):  # fmt: skip
        with pytest.raises(InvalidAutomaticSettings, match=next(iter(bad))):
            prefill_settings_set(project=semi, settings=bad, user=admin_user)
    with pytest.raises(PermissionDenied):
        prefill_settings_set(project=semi, settings={}, user=annotator_user)
    semi.refresh_from_db()
    assert semi.prefill_settings == {"pred_iou_thresh": 0.9}


# --- the tool --------------------------------------------------------------------------------


def test_reject_then_restore_a_prefilled_mask(semi, annotator_user):
    mask = prefilled(first_image(semi), square(2, 2))
    rejected = prefill_mask_reject(mask=mask, user=annotator_user)
    assert (rejected.status, rejected.reviewed_by) == ("rejected", annotator_user)
    assert prefill_mask_reject(mask=mask, user=annotator_user).status == "rejected"  # again: same
    restored = prefill_mask_restore(mask=mask, user=annotator_user)
    assert (restored.status, restored.reviewed_by, restored.rejection_reason) == (
        "proposed",
        None,
        "",
    )


def test_only_proposed_prefill_masks_are_rejected(semi, annotator_user):
    image = first_image(semi)
    own = mask_create(image=image, binary=square(2, 2), source="assisted", annotator=annotator_user)
    kept = prefilled(image, square(12, 12), status="accepted")
    with pytest.raises(PrefillRefused, match="only prefilled masks"):
        prefill_mask_reject(mask=own, user=annotator_user)
    with pytest.raises(PrefillRefused, match="not proposed"):
        prefill_mask_reject(mask=kept, user=annotator_user)
    assert sorted(Mask.objects.values_list("status", flat=True)) == ["accepted", "accepted"]


def test_reject_needs_the_image_and_the_role(semi, annotator_user, outsider_user):
    image = first_image(semi)
    mask = prefilled(image, square(2, 2))
    other = User.objects.create_user("carol")
    membership_set(project=semi, user=other, role="annotator")
    image_lease_take(image=image, user=other)
    with pytest.raises(LeaseTaken):
        prefill_mask_reject(mask=mask, user=annotator_user)
    with pytest.raises(PermissionDenied):
        prefill_mask_reject(mask=mask, user=outsider_user)
    ImageLease.objects.all().delete()
    Image.objects.filter(pk=image.pk).update(status=Image.Status.DONE)
    with pytest.raises(PrefillRefused, match="is done"):
        prefill_mask_reject(mask=mask, user=annotator_user)
    mask.refresh_from_db()
    assert mask.status == "proposed"


def test_marking_done_accepts_the_prefilled_masks_left_in(semi, annotator_user):
    image = first_image(semi)
    left_in = prefilled(image, square(2, 2))
    wrong = prefilled(image, square(15, 25))
    other_image = prefilled(Image.objects.filter(project=semi).order_by("id")[1], square(2, 2))
    prefill_mask_reject(mask=wrong, user=annotator_user)
    image_mark_done(image=image, user=annotator_user)
    statuses = dict(Mask.objects.values_list("id", "status"))
    assert statuses == {left_in.pk: "accepted", wrong.pk: "rejected", other_image.pk: "proposed"}


def test_api_reject_and_restore(semi, annotator_client, outsider_user):
    image = first_image(semi)
    mask = prefilled(image, square(2, 2))
    manual = mask_create(image=image, binary=square(15, 20), source="manual")
    url = reverse("api-prefill-reject", args=[mask.pk])
    response = annotator_client.post(url)
    assert (response.status_code, response.json()["status"]) == (200, "rejected")
    listed = annotator_client.get(
        reverse("api-image-masks", args=[image.pk]), {"status": "proposed"}
    )
    assert listed.json()["results"] == []
    restore = annotator_client.post(reverse("api-prefill-restore", args=[mask.pk]))
    assert (restore.status_code, restore.json()["status"]) == (200, "proposed")
    refused = annotator_client.post(reverse("api-prefill-reject", args=[manual.pk]))
    assert (refused.status_code, refused.json()["code"]) == (400, "prefill_refused")
    assert client_for(outsider_user).post(url).status_code == 404


def test_api_prefill_start_and_settings(semi, admin_client, annotator_client):
    url = reverse("api-prefill", args=[semi.pk])
    assert annotator_client.post(url, {}, format="json").status_code == 403
    response = admin_client.post(url, {}, format="json")
    assert (response.status_code, response.json()["kind"]) == (202, "prefill")
    again = admin_client.post(url, {}, format="json")
    assert (again.status_code, again.json()["code"]) == (400, "prefill_refused")
    bad_ids = admin_client.post(url, {"image_ids": [999_999]}, format="json")
    assert (bad_ids.status_code, bad_ids.json()["code"]) == (400, "prefill_refused")

    settings_url = reverse("api-prefill-settings", args=[semi.pk])
    got = admin_client.get(settings_url).json()
    assert got["defaults"] == PREFILL_DEFAULTS
    assert got["overrides"] == {}
    put = admin_client.put(settings_url, {"settings": {"points_per_side": 16}}, format="json")
    assert (put.status_code, put.json()["resolved"]["points_per_side"]) == (200, 16)
    bad = admin_client.put(settings_url, {"settings": {"colour": "red"}}, format="json")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_settings")
    assert annotator_client.get(settings_url).status_code == 403
    semi.refresh_from_db()
    assert semi.prefill_settings == {"points_per_side": 16}
    # As the docs say: {"settings": {}} returns to the defaults; a body without it is 400.
    assert admin_client.put(settings_url, {}, format="json").status_code == 400
    reset = admin_client.put(settings_url, {"settings": {}}, format="json")
    assert (reset.status_code, reset.json()["overrides"]) == (200, {})


def test_prefill_of_another_projects_image_is_refused_as_a_prefill(semi, admin_client, admin_user):
    other = Project.objects.create(name="dogs")
    (outcome,) = images_ingest_batch(project=other, files=[("d.png", png(9, W, H))])
    assert outcome.image is not None
    response = admin_client.post(
        reverse("api-prefill", args=[semi.pk]),
        {"image_ids": [first_image(semi).pk, outcome.image.pk]},
        format="json",
    )
    assert (response.status_code, response.json()["code"]) == (400, "prefill_refused")
    assert f"no images {outcome.image.pk} in project 'cats'" in response.json()["detail"]
    assert not Job.objects.filter(kind=Job.Kind.PREFILL).exists()


# --- stats -----------------------------------------------------------------------------------


def test_stats_count_prefilled_and_added_masks_apart(semi, annotator_user):
    image = first_image(semi)
    for at in (square(0, 0), square(0, 12), square(12, 0)):
        prefilled(image, at)
    wrong = prefilled(image, square(12, 12))
    prefill_mask_reject(mask=wrong, user=annotator_user)
    mask_create(
        image=image,
        binary=square(18, 28),
        source="assisted",
        annotator=annotator_user,
        seconds_spent=12.0,
        clicks=3,
    )
    image_mark_done(image=image, user=annotator_user)
    totals = project_stats(project=semi, days=7)["totals"]
    assert (totals["masks"], totals["seconds_per_mask"], totals["clicks_per_mask"]) == (
        1,
        12.0,
        3.0,
    )
    assert (
        totals["prefilled"],
        totals["prefill_kept"],
        totals["prefill_rejected"],
        totals["prefill_pending"],
    ) == (4, 3, 1, 0)
    today = project_stats(project=semi, days=1)["per_day"][0]
    assert (today["masks"], today["prefilled"]) == (1, 4)


def test_stats_api_reports_the_prefill_counts(semi, admin_client):
    prefilled(first_image(semi), square(2, 2))
    body = admin_client.get(reverse("api-project-stats", args=[semi.pk])).json()
    assert (body["totals"]["prefilled"], body["totals"]["prefill_pending"]) == (1, 1)
    assert body["totals"]["masks"] == 0


# --- calibration -----------------------------------------------------------------------------


def test_greedy_matching_is_one_to_one():
    iou = np.array([[0.9, 0.8], [0.85, 0.1], [0.95, 0.0]])
    assert greedy_matches(iou) == [0.95, 0.8]
    counts = MatchCounts()
    counts.add(iou)
    summary = counts.summary()
    assert (summary["predicted"], summary["ground_truth"]) == (3, 2)
    assert summary["precision@0.5"] == pytest.approx(2 / 3)
    assert summary["recall@0.75"] == 1.0


def test_rle_iou_of_identical_and_disjoint_masks():
    from annotation.services.prefill_calibration import binary_to_rle

    a, b = binary_to_rle(square(0, 0)), binary_to_rle(square(15, 25))
    assert rle_iou([a, b], [a]).tolist() == [[1.0], [0.0]]


def test_prefill_calibrate_measures_the_validation_split(semi, annotator_user):
    images = list(Image.objects.filter(project=semi).order_by("id"))
    ValidationSplit.objects.create(project=semi, image_ids=[images[0].pk, images[1].pk], seed=1)
    truth = square(5, 5, side=15)
    mask_create(image=images[0], binary=truth, source="assisted", annotator=annotator_user)
    prefilled(images[0], truth, status="accepted")  # not ground truth: made by the model
    # Everything the tiny model proposes on a 4 x 4 grid, compared with the one true object.
    result = prefill_calibrate(
        project=semi,
        overrides={
            "points_per_side": 4,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
            "min_mask_region_area": 0,
        },
    )
    assert (result["images"], result["images_without_masks"], result["ground_truth"]) == (1, 1, 1)
    assert result["settings"]["points_per_side"] == 4
    assert result["predicted"] >= 1
    assert 0.0 <= result["precision@0.5"] <= 1.0
    assert result["recall@0.5"] in (0.0, 1.0)
    semi.refresh_from_db()
    assert semi.prefill_settings == {}  # overrides are not stored


def test_prefill_calibrate_needs_a_validation_split(semi):
    with pytest.raises(PrefillRefused, match="no validation split"):
        prefill_calibrate(project=semi)


def test_rejected_prefill_masks_stay_out_of_the_training_selection(semi, annotator_user):
    # The query the retrain round's snapshot reads its masks from.
    from training.services.rounds import round_masks as snapshot_masks

    image = first_image(semi)
    wrong = prefilled(image, square(2, 2))
    kept = prefilled(image, square(15, 25))
    prefill_mask_reject(mask=wrong, user=annotator_user)
    image_mark_done(image=image, user=annotator_user)
    assert list(snapshot_masks(semi).values_list("id", flat=True)) == [kept.pk]


def test_prefill_calibrate_command(semi, annotator_user, capsys):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    (image,) = Image.objects.filter(project=semi).order_by("id")[:1]
    ValidationSplit.objects.create(project=semi, image_ids=[image.pk], seed=1)
    mask_create(image=image, binary=square(5, 5), source="assisted", annotator=annotator_user)
    call_command(
        "prefill_calibrate", "cats", "--set", "points_per_side=2", "--set", "pred_iou_thresh=0"
    )
    out = json.loads(capsys.readouterr().out)
    assert (out["ground_truth"], out["settings"]["points_per_side"]) == (1, 2)
    with pytest.raises(CommandError, match="unknown setting"):
        call_command("prefill_calibrate", "cats", "--set", "colour=red")
    with pytest.raises(CommandError, match="max_images must be at least 1"):
        call_command("prefill_calibrate", "cats", "--max-images", "0")


def test_a_prefill_run_stores_proposed_prefill_masks_that_done_accepts(semi, admin_user):
    """The whole path: a prefill run (its chunk run here, as a gpu worker would), the tool's
    view of the image (proposed prefill masks), done."""
    from engine.services.automatic import automatic_chunk_run

    # Lenient settings, so that the tiny test model proposes something on 30 x 40 noise.
    prefill_settings_set(
        project=semi,
        settings={
            "points_per_side": 4,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
            "min_mask_region_area": 0,
            "max_mask_area_fraction": None,
        },
        user=admin_user,
    )
    image = first_image(semi)
    job = prefill_start(project=semi, user=admin_user, image_ids=[image.pk])
    automatic_chunk_run(job_id=job.pk, image_ids=[image.pk])
    masks = list(Mask.objects.filter(image=image))
    assert masks
    assert {(m.source, m.status, m.stage, m.job_id) for m in masks} == {
        ("prefill", "proposed", "semi_automatic", job.pk)
    }
    assert all(m.annotator_id is None and m.predicted_iou is not None for m in masks)
    assert AutomaticImage.objects.get(job=job, image=image).status == "done"
    assert image.pk not in prefill_todo_image_ids(project=semi)
    image_mark_done(image=image, user=admin_user)
    assert set(Mask.objects.filter(image=image).values_list("status", flat=True)) == {"accepted"}
