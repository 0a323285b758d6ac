"""Promotion, rollback and the auto-promotion policy: services, API, management commands, and
the embeddings a promotion queues (images in progress first)."""

import base64
import datetime as dt
import json
import threading

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from annotation.models import Image, ImageLease, Membership, Project
from annotation.services.projects import membership_set
from engine.models import Deployment, Job, ModelVersion
from engine.services.registry import DeployRefused, model_version_deploy
from tests.factories import client_for
from tests.training.promotion_helpers import (
    make_images,
    make_mask,
    make_version,
    round_metrics,
    validation,
)
from training.services.promotion import (
    PromotionRefused,
    rollback_target,
    version_auto_promote,
    version_promote,
    version_rollback,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def seed(project: Project) -> ModelVersion:
    version = make_version(project)
    model_version_deploy(project=project, version=version)
    return version


def deployed_id(project: Project) -> int | None:
    project.refresh_from_db(fields=["deployed_version"])
    return project.deployed_version_id


# --- services ------------------------------------------------------------------------------


def test_promote_deploys_the_version_and_records_what_it_replaced(project, seed, admin_user):
    child = make_version(project, round=1, parent=seed)
    assert version_promote(version=child, user=admin_user, reason="better") == child
    assert deployed_id(project) == child.pk
    [deployment] = Deployment.objects.filter(project=project)
    assert (deployment.version_id, deployment.previous_version_id) == (child.pk, seed.pk)
    assert (deployment.action, deployment.user, deployment.reason) == (
        "promote",
        admin_user,
        "better",
    )


def test_promoting_the_deployed_version_is_refused_and_changes_nothing(project, seed):
    with pytest.raises(PromotionRefused, match="deployed in project 'cats' already"):
        version_promote(version=seed, user=None, reason="")
    assert not Deployment.objects.exists()
    assert deployed_id(project) == seed.pk


def test_a_retired_version_is_not_promoted(project, seed):
    old = make_version(project, round=1, parent=seed)
    ModelVersion.objects.filter(pk=old.pk).update(status=ModelVersion.Status.RETIRED)
    old.refresh_from_db()
    with pytest.raises(DeployRefused, match="retired, not ready"):
        version_promote(version=old, user=None, reason="")
    assert deployed_id(project) == seed.pk
    assert not Deployment.objects.exists()


def test_rollbacks_walk_back_the_promotions_one_by_one(project, seed, admin_user):
    first = make_version(project, round=1, parent=seed)
    second = make_version(project, round=2, parent=first)
    version_promote(version=first, user=admin_user, reason="")
    version_promote(version=second, user=admin_user, reason="")
    project.refresh_from_db()
    assert rollback_target(project=project) == first

    assert version_rollback(project=project, user=admin_user) == first
    assert deployed_id(project) == first.pk
    assert version_rollback(project=project, user=admin_user) == seed
    assert deployed_id(project) == seed.pk
    # The seed was deployed by import, never promoted: nothing before it.
    with pytest.raises(PromotionRefused, match="nothing to roll back to"):
        version_rollback(project=project, user=admin_user)
    assert deployed_id(project) == seed.pk
    actions = list(Deployment.objects.order_by("id").values_list("action", "version_id"))
    assert actions == [
        ("promote", first.pk), ("promote", second.pk), ("rollback", first.pk), ("rollback", seed.pk)
    ]  # fmt: skip


def test_a_rollback_to_a_retired_version_is_refused(project, seed):
    child = make_version(project, round=1, parent=seed)
    version_promote(version=child, user=None, reason="")
    ModelVersion.objects.filter(pk=seed.pk).update(status=ModelVersion.Status.RETIRED)
    with pytest.raises(PromotionRefused):
        version_rollback(project=project, user=None)
    assert deployed_id(project) == child.pk


def test_auto_promotion_promotes_a_child_that_beats_its_parent_by_the_margin(project, seed):
    child = make_version(
        project, round=1, parent=seed, metrics=round_metrics(validation(0.71), validation(0.6))
    )
    assert version_auto_promote(version=child, margin=0.1) is True
    assert deployed_id(project) == child.pk
    [deployment] = Deployment.objects.all()
    assert deployment.action == Deployment.Action.AUTO
    assert deployment.user is None
    assert "miou@1 0.7100 vs parent 0.6000" in deployment.reason


def test_auto_promotion_keeps_the_parent_below_the_margin(project, seed):
    child = make_version(
        project, round=1, parent=seed, metrics=round_metrics(validation(0.69), validation(0.6))
    )
    assert version_auto_promote(version=child, margin=0.1) is False
    assert deployed_id(project) == seed.pk
    assert not Deployment.objects.exists()


def test_auto_promotion_on_clicks_wants_fewer_clicks(project, seed):
    metrics = round_metrics(validation(0.5, clicks=6.0), validation(0.5, clicks=8.0))
    worse = make_version(
        project, round=1, parent=seed,
        metrics=round_metrics(validation(0.5, clicks=9.0), validation(0.5, clicks=8.0)),
    )  # fmt: skip
    assert version_auto_promote(version=worse, margin=1.0, metric="clicks_to_0.9") is False
    better = make_version(project, round=2, parent=seed, metrics=metrics)
    assert version_auto_promote(version=better, margin=1.0, metric="clicks_to_0.9") is True
    assert deployed_id(project) == better.pk


def test_auto_promotion_ignores_a_child_of_a_version_that_is_not_deployed(project, seed):
    other = make_version(project, name="other")
    child = make_version(
        project, round=1, parent=other, metrics=round_metrics(validation(0.9), validation(0.1))
    )
    assert version_auto_promote(version=child, margin=0.0) is False
    assert deployed_id(project) == seed.pk


def test_auto_promotion_without_validation_figures_does_nothing(project, seed):
    child = make_version(project, round=1, parent=seed)
    assert version_auto_promote(version=child, margin=0.0) is False
    assert deployed_id(project) == seed.pk


@pytest.mark.parametrize(
    ("margin", "metric", "message"),
    [(-0.1, "miou@1", "margin must be"), (float("nan"), "miou@1", "margin must be"),
     (0.1, "miou@7", "unknown metric 'miou@7'")],
)  # fmt: skip
def test_auto_promotion_rejects_bad_arguments(project, seed, margin, metric, message):
    child = make_version(
        project, round=1, parent=seed, metrics=round_metrics(validation(0.9), validation(0.1))
    )
    with pytest.raises(ValueError, match=message):
        version_auto_promote(version=child, margin=margin, metric=metric)
    assert deployed_id(project) == seed.pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_promotions_are_serialised_by_the_project_lock(project, seed):
    """Two promotions at once: both land, one after the other, and the second records the
    first as the version it replaced (the project row lock makes the read-then-write atomic)."""
    one = make_version(project, round=1, parent=seed)
    two = make_version(project, round=2, parent=seed)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def promote(version: ModelVersion) -> None:
        try:
            barrier.wait(timeout=10)
            version_promote(version=version, user=None, reason="race")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=promote, args=(v,)) for v in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    first, second = Deployment.objects.order_by("id")
    assert first.previous_version_id == seed.pk
    assert second.previous_version_id == first.version_id
    assert deployed_id(project) == second.version_id


# --- the embeddings of the new version -----------------------------------------------------------


def test_a_promotion_queues_images_in_progress_first_then_a_bulk_job(
    project, seed, annotator_user, redis_broker, django_capture_on_commit_callbacks
):
    leased, partial, done, _untouched = make_images(project, 4)
    ImageLease.objects.create(
        image=leased, user=annotator_user, expires_at=timezone.now() + dt.timedelta(minutes=5)
    )
    make_mask(partial, version=seed, annotator=annotator_user)
    make_mask(done, version=seed, annotator=annotator_user)
    Image.objects.filter(pk=done.pk).update(status=Image.Status.DONE)
    expired = make_images(project, 1)[0]  # a lease that ran out is not work in progress
    ImageLease.objects.create(
        image=expired, user=annotator_user, expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    child = make_version(project, round=1, parent=seed)
    with django_capture_on_commit_callbacks(execute=True):
        version_promote(version=child, user=None, reason="")

    # kombu's Redis transport: priority 0 in "gpu" (popped first), priority 9 in its own list.
    urgent = [json.loads(item) for item in redis_broker.lrange("gpu", 0, -1)]
    args = [json.loads(base64.b64decode(item["body"]))[0] for item in urgent]
    assert sorted(args) == sorted([[leased.pk, child.pk], [partial.pk, child.pk]])
    assert {item["headers"]["task"] for item in urgent} == {"engine.tasks.gpu_compute_embedding"}
    assert redis_broker.llen("gpu\x06\x169") == 1
    job = Job.objects.get(kind=Job.Kind.EMBED)
    assert job.params["model_version_id"] == child.pk
    assert job.progress_total == 5


def test_images_in_progress_lists_leased_before_partly_annotated(project, seed, annotator_user):
    from engine.services.redeploy import images_in_progress

    partial, leased = make_images(project, 2)
    make_mask(partial, version=seed, annotator=annotator_user)
    make_mask(partial, version=seed, annotator=annotator_user)
    ImageLease.objects.create(
        image=leased, user=annotator_user, expires_at=timezone.now() + dt.timedelta(minutes=5)
    )
    assert [image.pk for image in images_in_progress(project=project)] == [leased.pk, partial.pk]
    assert [image.pk for image in images_in_progress(project=project, limit=1)] == [leased.pk]


# --- API -------------------------------------------------------------------------------------


def promote_url(project: Project, version: ModelVersion) -> str:
    return f"/api/projects/{project.pk}/model-versions/{version.pk}/promote/"


def test_an_admin_promotes_and_rolls_back_over_the_api(project, seed, admin_client):
    child = make_version(project, round=1, parent=seed)
    response = admin_client.post(promote_url(project, child), {"reason": "r1 wins"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["action"] == "promote"
    assert body["version"]["id"] == child.pk
    assert body["version"]["is_deployed"] is True
    assert body["previous_version"] == seed.pk
    assert (body["user"], body["reason"]) == ("alice", "r1 wins")

    response = admin_client.post(f"/api/projects/{project.pk}/model-versions/rollback/")
    assert response.status_code == 200, response.content
    assert (response.json()["action"], response.json()["version"]["id"]) == ("rollback", seed.pk)
    assert deployed_id(project) == seed.pk

    response = admin_client.post(f"/api/projects/{project.pk}/model-versions/rollback/")
    assert response.status_code == 409
    assert response.json()["code"] == "promotion_refused"


def test_promotion_api_refusals_change_nothing(
    project, seed, annotator_client, admin_client, outsider_user
):
    child = make_version(project, round=1, parent=seed)
    other_project = Project.objects.create(name="dogs")
    foreign = make_version(other_project)
    assert annotator_client.post(promote_url(project, child)).status_code == 403
    assert client_for(outsider_user).post(promote_url(project, child)).status_code == 404
    assert admin_client.post(promote_url(project, foreign)).status_code == 404
    response = admin_client.post(promote_url(project, child), {"reason": "x" * 501}, format="json")
    assert response.status_code == 400
    response = admin_client.post(promote_url(project, seed))
    assert response.status_code == 409
    assert "already" in response.json()["detail"]
    assert (
        annotator_client.post(f"/api/projects/{project.pk}/model-versions/rollback/").status_code
        == 403
    )
    assert deployed_id(project) == seed.pk
    assert not Deployment.objects.exists()


def test_any_member_reads_the_deployed_version(project, seed, annotator_client, outsider_user):
    url = f"/api/projects/{project.pk}/deployed-version/"
    response = annotator_client.get(url)
    assert response.status_code == 200
    assert response.json()["deployed_version"]["id"] == seed.pk
    assert client_for(outsider_user).get(url).status_code == 404
    child = make_version(project, round=1, parent=seed)
    version_promote(version=child, user=None, reason="")
    body = annotator_client.get(url).json()
    assert (body["deployed_version"]["id"], body["round"]) == (child.pk, 1)


# --- management commands -----------------------------------------------------------------------


def test_promote_and_rollback_commands(project, seed, capsys):
    child = make_version(project, round=1, parent=seed)
    call_command("promote_version", "cats", str(child.pk), "--reason", "cli")
    assert deployed_id(project) == child.pk
    assert f"model version {child.pk} is live" in capsys.readouterr().out
    assert Deployment.objects.get().reason == "cli"
    call_command("rollback_version", str(project.pk))
    assert deployed_id(project) == seed.pk
    with pytest.raises(CommandError, match="no model version 999999"):
        call_command("promote_version", "cats", "999999")
    with pytest.raises(CommandError, match="nothing to roll back to"):
        call_command("rollback_version", "cats")
    with pytest.raises(CommandError, match="unknown project"):
        call_command("rollback_version", "nope")
    assert deployed_id(project) == seed.pk


def test_a_reviewer_may_not_promote(project, seed):
    reviewer = User.objects.create_user("rita", password="rita-pass-123")
    membership_set(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    child = make_version(project, round=1, parent=seed)
    assert client_for(reviewer).post(promote_url(project, child)).status_code == 403
    assert deployed_id(project) == seed.pk
