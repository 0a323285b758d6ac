"""Moving a project between stages: the service, the API, the CLI and the web control."""

from pathlib import Path

import numpy as np
import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from annotation.errors import DomainError
from annotation.models import Image, Mask, Project, Stage
from annotation.selectors.stages import project_mask_figures, project_stage_history
from annotation.services.ingest import images_ingest_batch
from annotation.services.masks import mask_create
from annotation.services.projects import (
    NoModelForStage,
    project_stage_change,
    project_stage_set,
)
from engine.models import AutomaticImage, Job, ModelVersion
from engine.services.registry import model_version_import
from tests.factories import client_for, png

pytestmark = pytest.mark.django_db

TINY = Path(__file__).resolve().parents[1] / "engine" / "sam" / "goldens" / "tiny_sam.pth"


def images_of(project: Project, count: int) -> list[Image]:
    outcomes = images_ingest_batch(
        project=project, files=[(f"i{i}.png", png(i, 40, 30)) for i in range(count)]
    )
    return [outcome.image for outcome in outcomes if outcome.image is not None]


def deploy(project: Project) -> ModelVersion:
    return model_version_import(project=project, path_or_file=TINY, name="tiny", deploy=True)


def stage_changes() -> int:
    return LogEntry.objects.count()


# --- the service -------------------------------------------------------------------------------


def test_admin_moves_the_project_and_the_change_is_recorded(project, admin_user):
    changed = project_stage_set(project=project, stage=Stage.FULLY_AUTOMATIC, user=admin_user)
    project.refresh_from_db()
    assert changed.stage == project.stage == "fully_automatic"
    history = project_stage_history(project=project)
    assert [(row["user"], row["previous"], row["stage"]) for row in history] == [
        ("alice", "assisted_manual", "fully_automatic")
    ]


def test_the_same_stage_again_changes_and_records_nothing(project, admin_user):
    change = project_stage_change(project=project, stage=Stage.ASSISTED_MANUAL, user=admin_user)
    assert (change.previous, change.prefill_job) == ("assisted_manual", None)
    assert stage_changes() == 0


def test_an_annotator_may_not_change_the_stage(project, annotator_user):
    with pytest.raises(PermissionDenied):
        project_stage_set(project=project, stage=Stage.FULLY_AUTOMATIC, user=annotator_user)
    project.refresh_from_db()
    assert (project.stage, stage_changes()) == ("assisted_manual", 0)


@pytest.mark.parametrize("stage", ["manual", "", "SEMI_AUTOMATIC"])
def test_an_unknown_stage_is_refused_and_changes_nothing(project, admin_user, stage):
    with pytest.raises(DomainError, match="unknown stage"):
        project_stage_set(project=project, stage=stage, user=admin_user)
    project.refresh_from_db()
    assert (project.stage, stage_changes()) == ("assisted_manual", 0)


def test_semi_automatic_needs_a_deployed_model(project, admin_user):
    images_of(project, 2)
    with pytest.raises(NoModelForStage, match="no deployed model version"):
        project_stage_set(project=project, stage=Stage.SEMI_AUTOMATIC, user=admin_user)
    project.refresh_from_db()
    assert (project.stage, stage_changes(), Job.objects.count()) == ("assisted_manual", 0, 0)


def test_entering_semi_automatic_prefills_the_todo_images_only(project, admin_user):
    todo, done = images_of(project, 2)
    Image.objects.filter(pk=done.pk).update(status=Image.Status.DONE)
    version = deploy(project)
    change = project_stage_change(project=project, stage=Stage.SEMI_AUTOMATIC, user=admin_user)
    job = change.prefill_job
    assert job is not None
    assert (job.kind, job.params["model_version_id"], job.created_by) == (
        "prefill",
        version.pk,
        admin_user,
    )
    rows = AutomaticImage.objects.filter(job=job)
    assert list(rows.values_list("image_id", flat=True)) == [todo.pk]
    # The run's settings are the calibrated prefill defaults, not the automatic stage's.
    from annotation.services.semi_automatic import PREFILL_DEFAULTS

    for key, value in PREFILL_DEFAULTS.items():
        assert job.params["settings"][key] == value
    assert job.params["status"] == "proposed"
    assert job.params["source"] == "prefill"


def test_entering_semi_automatic_with_every_image_done_starts_no_run(project, admin_user):
    (image,) = images_of(project, 1)
    Image.objects.filter(pk=image.pk).update(status=Image.Status.DONE)
    deploy(project)
    change = project_stage_change(project=project, stage=Stage.SEMI_AUTOMATIC, user=admin_user)
    assert change.prefill_job is None
    assert change.project.stage == "semi_automatic"


def test_mask_figures_split_accepted_masks_by_maker(project, annotator_user):
    (image,) = images_of(project, 1)
    square = np.zeros((30, 40), bool)
    square[5:15, 5:15] = True
    mask_create(
        image=image,
        binary=square,
        source="assisted",
        annotator=annotator_user,
        seconds_spent=8.0,
        clicks=2,
    )
    mask_create(
        image=image,
        binary=square,
        source="assisted",
        annotator=annotator_user,
        seconds_spent=4.0,
        clicks=4,
    )
    mask_create(image=image, binary=square, source="prefill", stage="semi_automatic")
    mask_create(
        image=image, binary=square, source="prefill", stage="semi_automatic", status="rejected"
    )
    mask_create(
        image=image, binary=square, source="prefill", stage="semi_automatic", status="proposed"
    )
    mask_create(image=image, binary=square, source="automatic", stage="fully_automatic")
    figures = project_mask_figures(project=project)
    assert figures == {
        "accepted": 4,
        "accepted_by_annotators": 2,
        "accepted_prefill": 1,
        "accepted_automatic": 1,
        "prefill_proposed": 1,
        "prefill_rejected": 1,
        "prefill_kept_fraction": 0.5,
        "seconds_per_mask": 6.0,
        "clicks_per_mask": 3.0,
    }
    assert Mask.objects.count() == 6


# --- the API -----------------------------------------------------------------------------------


def stage_url(project: Project) -> str:
    return reverse("api-project-stage", args=[project.pk])


def test_api_admin_changes_the_stage(project, admin_client):
    response = admin_client.patch(stage_url(project), {"stage": "fully_automatic"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["project"]["stage"], body["previous_stage"], body["changed"]) == (
        "fully_automatic",
        "assisted_manual",
        True,
    )
    assert body["prefill_job"] is None
    again = admin_client.post(stage_url(project), {"stage": "fully_automatic"}, format="json")
    assert (again.status_code, again.json()["changed"]) == (200, False)


def test_api_semi_automatic_returns_the_prefill_run(project, admin_client):
    images_of(project, 3)
    deploy(project)
    response = admin_client.patch(stage_url(project), {"stage": "semi_automatic"}, format="json")
    assert response.status_code == 200, response.json()
    job = response.json()["prefill_job"]
    assert (job["kind"], job["progress_total"]) == ("prefill", 3)


def test_api_annotator_gets_403_and_nothing_changes(project, annotator_client):
    response = annotator_client.patch(
        stage_url(project), {"stage": "fully_automatic"}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
    project.refresh_from_db()
    assert project.stage == "assisted_manual"


def test_api_outsider_gets_404(project, outsider_user):
    response = client_for(outsider_user).patch(
        stage_url(project), {"stage": "fully_automatic"}, format="json"
    )
    assert response.status_code == 404


@pytest.mark.parametrize("body", [{"stage": "manual"}, {}, {"stage": 3}])
def test_api_bad_stage_is_400(project, admin_client, body):
    response = admin_client.patch(stage_url(project), body, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert "stage" in response.json()
    project.refresh_from_db()
    assert project.stage == "assisted_manual"


def test_api_semi_automatic_without_model_is_409(project, admin_client):
    response = admin_client.patch(stage_url(project), {"stage": "semi_automatic"}, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "no_deployed_version")


def test_the_stage_endpoint_is_in_the_openapi_schema(admin_client):
    schema = admin_client.get("/api/schema/", {"format": "json"}).json()
    operations = schema["paths"]["/api/projects/{project_id}/stage/"]
    assert operations["patch"]["operationId"] == "projects_stage_set"
    assert "post" in operations


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_sets_the_stage(project, admin_user, capsys):
    call_command("set_stage", "cats", "fully_automatic", "--user", "alice")
    project.refresh_from_db()
    assert project.stage == "fully_automatic"
    assert "assisted_manual -> fully_automatic" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cats", "manual", "--user", "alice"], "unknown stage 'manual'"),
        (["dogs", "fully_automatic", "--user", "alice"], "unknown project 'dogs'"),
        (["cats", "fully_automatic", "--user", "bob"], "only project admins"),
        (["cats", "fully_automatic", "--user", "nobody"], "unknown user 'nobody'"),
        (["cats", "semi_automatic", "--user", "alice"], "no deployed model version"),
    ],
)
def test_cli_refuses_bad_input(project, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("set_stage", *args)
    project.refresh_from_db()
    assert project.stage == "assisted_manual"


# --- the web control ---------------------------------------------------------------------------


def web_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_web_admin_changes_the_stage_and_the_page_shows_it(project, admin_user):
    client = web_client(admin_user)
    response = client.post(
        reverse("project-stage", args=[project.pk]), {"stage": "fully_automatic"}
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.stage == "fully_automatic"
    page = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert 'id="stage-form"' in page
    assert 'data-stage="fully_automatic"' in page
    assert 'data-stage-change="fully_automatic"' in page  # the history
    assert "Stage changed to Fully automatic." in page


def test_web_refusal_is_shown_and_changes_nothing(project, admin_user):
    client = web_client(admin_user)
    response = client.post(
        reverse("project-stage", args=[project.pk]), {"stage": "semi_automatic"}, follow=True
    )
    assert "Stage not changed: project &#x27;cats&#x27; has no deployed model" in (
        response.content.decode()
    )
    project.refresh_from_db()
    assert project.stage == "assisted_manual"


def test_web_annotator_cannot_change_the_stage_nor_sees_the_control(project, annotator_user):
    client = web_client(annotator_user)
    response = client.post(
        reverse("project-stage", args=[project.pk]), {"stage": "fully_automatic"}
    )
    assert response.status_code == 403
    page = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert 'id="stage-form"' not in page
    project.refresh_from_db()
    assert project.stage == "assisted_manual"
