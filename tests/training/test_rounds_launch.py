"""Launching rounds: snapshot and frozen validation split, refusals, concurrency, roles."""

import threading

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from annotation.models import Mask, Project
from annotation.services.projects import membership_set
from engine.models import Job
from tests.factories import client_for
from tests.training.rounds_data import accepted_count, add_scenes, deployed_parent
from training.models import RoundSettings, TrainingRound, ValidationSplit
from training.services.rounds import RoundAlreadyActive, round_launch
from training.services.snapshot import ids_to_ranges, ranges_count, ranges_to_ids


@pytest.fixture
def ready(project):
    """cats: 5 scenes (4 accepted masks each), vit_tiny deployed, min_masks 6."""
    deployed_parent(project)
    add_scenes(project, [1, 2, 3, 4, 5], max_masks=4)
    RoundSettings.objects.create(project=project, min_masks=6)
    return project


def _finish(training_round: TrainingRound) -> None:
    Job.objects.filter(pk=training_round.job_id).update(
        status=Job.Status.SUCCEEDED, finished_at=timezone.now()
    )


def test_id_ranges_round_trip_compactly():
    ids = [1, 2, 3, 7, 9, 10]
    assert ids_to_ranges(ids) == [[1, 3], [7, 7], [9, 10]]
    assert list(ranges_to_ids(ids_to_ranges(ids))) == ids
    assert ranges_count(ids_to_ranges(range(1, 100_001))) == 100_000
    assert ids_to_ranges(range(1, 100_001)) == [[1, 100_000]]
    with pytest.raises(ValueError, match="sorted and distinct"):
        ids_to_ranges([3, 2])


@pytest.mark.django_db
def test_launch_snapshots_accepted_masks_outside_the_frozen_validation_split(ready, admin_user):
    project = ready
    rejected = Mask.objects.filter(project=project).order_by("id")[0]
    Mask.objects.filter(pk=rejected.pk).update(status=Mask.Status.REJECTED)
    first = round_launch(project=project, user=admin_user)
    split = ValidationSplit.objects.get(project=project)
    assert len(split.image_ids) == 1  # 20 % of 5 images
    train_ids = set(ranges_to_ids(first.train_mask_ranges))
    validation_ids = set(ranges_to_ids(first.validation_mask_ranges))
    accepted = Mask.objects.filter(project=project, status=Mask.Status.ACCEPTED)
    assert train_ids == set(
        accepted.exclude(image_id__in=split.image_ids).values_list("id", flat=True)
    )
    assert validation_ids == set(
        accepted.filter(image_id__in=split.image_ids).values_list("id", flat=True)
    )
    assert rejected.pk not in train_ids | validation_ids
    assert first.train_masks + first.validation_masks == accepted_count(project) == 19
    assert (first.number, first.train_images, first.validation_images) == (1, 4, 1)
    assert first.job.kind == Job.Kind.TRAIN
    assert first.job.status == Job.Status.QUEUED
    assert first.job.progress_total == first.config["steps"] == 200
    assert first.parent_version_id == project.deployed_version_id
    # Round 2 reuses the split; images added since train, they never validate.
    _finish(first)
    new_images = add_scenes(project, [6, 7, 8, 9, 10], max_masks=2)
    second = round_launch(project=project, user=admin_user, overrides={"steps": 7})
    assert ValidationSplit.objects.get(project=project).image_ids == split.image_ids
    assert second.number == 2
    assert second.config["steps"] == 7
    assert second.train_masks == first.train_masks + 10
    assert second.validation_mask_ranges == first.validation_mask_ranges
    assert not {image.pk for image in new_images} & set(split.image_ids)


@pytest.mark.django_db
def test_too_few_masks_is_refused_with_the_number_needed_and_changes_nothing(ready, admin_client):
    project = ready
    RoundSettings.objects.filter(project=project).update(min_masks=40)
    response = admin_client.post(f"/api/projects/{project.pk}/rounds/", {}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "too_few_masks"
    assert body["needed"] == 40 - body["available"]
    assert body["available"] == 16
    assert "24 more needed" in body["detail"]
    assert not TrainingRound.objects.exists()
    assert not Job.objects.exists()
    assert not ValidationSplit.objects.exists()  # the split freezes only with a round


@pytest.mark.django_db
def test_a_second_launch_while_one_is_queued_answers_409(ready, admin_client):
    project = ready
    first = admin_client.post(f"/api/projects/{project.pk}/rounds/", {"steps": 3}, format="json")
    assert first.status_code == 201, first.json()
    assert first.json()["number"] == 1
    assert first.json()["status"] == "queued"
    second = admin_client.post(f"/api/projects/{project.pk}/rounds/", {}, format="json")
    assert second.status_code == 409
    assert second.json()["code"] == "round_active"
    assert TrainingRound.objects.count() == 1
    # Cancelled, the project may launch again.
    cancel = admin_client.post(f"/api/projects/{project.pk}/rounds/1/cancel/")
    assert cancel.status_code == 200
    assert cancel.json()["status"] == "cancelled"
    again = admin_client.post(f"/api/projects/{project.pk}/rounds/", {}, format="json")
    assert again.status_code == 201
    assert again.json()["number"] == 2


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_launches_never_both_win(ready, admin_user):
    project = ready
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def launch() -> None:
        try:
            barrier.wait()
            outcomes.append(round_launch(project=project, user=admin_user))
        except Exception as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    launched = [o for o in outcomes if isinstance(o, TrainingRound)]
    refused = [o for o in outcomes if isinstance(o, RoundAlreadyActive)]
    assert (len(launched), len(refused)) == (1, 1), outcomes
    assert TrainingRound.objects.count() == Job.objects.filter(kind="train").count() == 1


@pytest.mark.django_db
def test_bad_launch_input_is_refused_and_changes_nothing(ready, admin_client):
    project = ready
    url = f"/api/projects/{project.pk}/rounds/"
    assert admin_client.post(url, {"steps": 0}, format="json").status_code == 400
    assert admin_client.post(url, {"scope": "everything"}, format="json").status_code == 400
    response = admin_client.post(url, {"parent_version": 999999}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "round_refused"
    project.deployed_version = None
    project.save()
    response = admin_client.post(url, {}, format="json")
    assert response.status_code == 400
    assert "no deployed model version" in response.json()["detail"]
    assert not TrainingRound.objects.exists()
    assert not ValidationSplit.objects.exists()


@pytest.mark.django_db
def test_rounds_are_for_project_admins_only(ready, annotator_client, outsider_user, admin_user):
    project = ready
    url = f"/api/projects/{project.pk}/rounds/"
    assert annotator_client.post(url, {}, format="json").status_code == 403
    assert annotator_client.get(url).status_code == 403
    assert annotator_client.get(f"/api/projects/{project.pk}/round-settings/").status_code == 403
    outsider = client_for(outsider_user)
    assert outsider.post(url, {}, format="json").status_code == 404
    assert outsider.get(url).status_code == 404
    other = Project.objects.create(name="dogs")
    membership_set(project=other, user=outsider_user, role="admin")
    round_launch(project=project, user=admin_user)
    # An admin of another project cannot see or cancel this one's rounds.
    assert outsider.get(f"/api/projects/{project.pk}/rounds/1/").status_code == 404
    assert outsider.post(f"/api/projects/{project.pk}/rounds/1/cancel/").status_code == 404
    assert outsider.get(f"/api/projects/{other.pk}/rounds/1/").status_code == 404
    assert not TrainingRound.objects.filter(project=other).exists()
    assert TrainingRound.objects.get().job.status == Job.Status.QUEUED


@pytest.mark.django_db
def test_list_and_detail_show_progress_and_the_live_loss_curve(ready, admin_user, admin_client):
    project = ready
    training_round = round_launch(project=project, user=admin_user, overrides={"steps": 10})
    Job.objects.filter(pk=training_round.job_id).update(status="running", progress_done=4)
    TrainingRound.objects.filter(pk=training_round.pk).update(
        loss_curve=[[1, 0.9], [2, 0.7], [3, 0.6], [4, 0.5]]
    )
    listed = admin_client.get(f"/api/projects/{project.pk}/rounds/").json()
    assert [r["number"] for r in listed] == [1]
    assert listed[0]["progress"] == 0.4
    assert listed[0]["step"] == 4
    assert "loss_curve" not in listed[0]
    detail = admin_client.get(f"/api/projects/{project.pk}/rounds/1/").json()
    assert detail["loss_curve"] == [[1, 0.9], [2, 0.7], [3, 0.6], [4, 0.5]]
    assert (detail["status"], detail["total_steps"], detail["created_by"]) == (
        "running",
        10,
        "alice",
    )
    assert detail["validation"] is None
    assert admin_client.get(f"/api/projects/{project.pk}/rounds/2/").status_code == 404


@pytest.mark.django_db
def test_augmentation_is_asked_for_per_launch_and_needs_the_full_scope(ready, admin_client):
    project = ready
    url = f"/api/projects/{project.pk}/rounds/"
    refused = admin_client.post(url, {"augment": True, "scope": "decoder"}, format="json")
    assert refused.status_code == 400
    assert "augment needs scope 'full'" in refused.json()["detail"]
    assert not TrainingRound.objects.exists()
    launched = admin_client.post(url, {"augment": True, "scope": "full", "steps": 3}, format="json")
    assert launched.status_code == 201, launched.json()
    assert TrainingRound.objects.get().config["augment"] is True


@pytest.mark.django_db
def test_launch_round_command_passes_augment(ready):
    RoundSettings.objects.filter(project=ready).update(scope="full")
    call_command("launch_round", ready.name, "--augment", "--steps", "2")
    assert TrainingRound.objects.get().config["augment"] is True
    _finish(TrainingRound.objects.get())
    call_command("launch_round", ready.name, "--steps", "2")
    assert TrainingRound.objects.get(number=2).config["augment"] is False
