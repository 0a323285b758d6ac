"""Automatic runs through the API, the CLI and the web panel: admins only, bad input 4xx."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from annotation.models import Project
from annotation.services.projects import membership_set, project_create
from engine.models import AutomaticImage, Job
from engine.services.automatic import automatic_start
from engine.services.registry import model_version_deploy
from tests.engine.automatic_helpers import FAST, Queue, corrupt
from tests.engine.conftest import add_images, register_golden
from tests.factories import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(monkeypatch, django_capture_on_commit_callbacks, fresh_model_cache) -> Queue:
    return Queue(monkeypatch, django_capture_on_commit_callbacks)


@pytest.fixture
def team(admin_user, annotator_user) -> Project:
    """alice admin, bob annotator; the golden tiny model deployed; two images."""
    project = project_create(name="auto-api", description="", creator=admin_user)
    membership_set(project=project, user=annotator_user, role="annotator")
    model_version_deploy(project=project, version=register_golden(project))
    add_images(project, 2)
    return project


def _start(queue: Queue, client, project: Project, body: dict):
    return queue.call(
        client.post, path=f"/api/projects/{project.pk}/automatic-runs/", data=body, format="json"
    )


def test_an_admin_starts_a_run_with_overrides_and_follows_it(queue, team, admin_user):
    client = client_for(admin_user)
    first = team.images.order_by("id").first()
    response = _start(queue, client, team, {"settings": FAST, "images": f"ids:{first.pk}"})
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["kind"] == "automatic"
    assert body["model_version"] == team.deployed_version_id
    assert body["settings"]["points_per_side"] == 4
    assert body["progress_total"] == 1
    queue.drain()
    detail = client.get(f"/api/automatic-runs/{body['id']}/").json()
    assert detail["status"] == "succeeded"
    assert detail["counts"]["done"] == 1
    assert detail["counts"]["masks"] > 0
    assert set(detail["mean_timings"]) >= {"encoder", "decoder", "postprocess", "db"}
    listed = client.get(f"/api/projects/{team.pk}/automatic-runs/").json()
    assert [run["id"] for run in listed] == [body["id"]]


def test_the_detail_lists_failed_images_with_their_reasons(queue, team, admin_user):
    client = client_for(admin_user)
    broken = team.images.order_by("id").last()
    corrupt(broken)
    run = _start(queue, client, team, {"settings": FAST}).json()
    queue.drain()
    detail = client.get(f"/api/automatic-runs/{run['id']}/").json()
    assert detail["counts"] == {
        "pending": 0,
        "done": 1,
        "failed": 1,
        "masks": detail["counts"]["masks"],
    }
    [failed] = detail["failed_images"]
    assert failed["image"] == broken.pk
    assert "cannot be read" in failed["error"]


def test_cancel_and_resume_over_the_api(queue, team, admin_user):
    client = client_for(admin_user)
    run = _start(queue, client, team, {"settings": FAST}).json()
    cancelled = queue.call(client.post, path=f"/api/automatic-runs/{run['id']}/cancel/")
    assert cancelled.json()["status"] == "cancelled"
    queue.drain()  # the queued chunks find the run cancelled and do nothing
    assert set(AutomaticImage.objects.values_list("status", flat=True)) == {"pending"}
    resumed = queue.call(
        client.post, path=f"/api/automatic-runs/{run['id']}/resume/", data={}, format="json"
    )
    assert resumed.status_code == 202
    assert resumed.json()["status"] == "queued"
    queue.drain()
    assert client.get(f"/api/automatic-runs/{run['id']}/").json()["counts"]["done"] == 2
    again = client.post(f"/api/automatic-runs/{run['id']}/resume/", {}, format="json")
    assert again.status_code == 400
    assert again.json()["code"] == "automatic_refused"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"settings": {"pred_iou_thresh": 2e9, "points_per_side": -1}}, "invalid_settings"),
        ({"settings": {"no_such_setting": 1}}, "invalid_settings"),
        ({"settings": {"pred_iou_thresh": 5, "points_per_side": 4}}, "invalid_settings"),
        ({"settings": {"stability_score_thresh": -3}}, "invalid_settings"),
        ({"settings": {"stability_score_offset": 0}}, "invalid_settings"),
        ({"images": "newest"}, "automatic_refused"),
        ({"image_ids": [987654]}, "automatic_refused"),
        ({"chunk": 0}, "invalid"),
    ],
)
def test_bad_input_answers_400_and_starts_nothing(queue, team, admin_user, body, code):
    response = _start(queue, client_for(admin_user), team, body)
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code
    assert not Job.objects.filter(kind="automatic").exists()
    assert queue.sent == []


def test_runs_are_for_admins_only(queue, team, annotator_user, outsider_user, admin_user):
    run = _start(queue, client_for(admin_user), team, {"settings": FAST}).json()
    bob = client_for(annotator_user)
    assert _start(queue, bob, team, {}).status_code == 403
    assert bob.get(f"/api/projects/{team.pk}/automatic-runs/").status_code == 403
    assert bob.get(f"/api/automatic-runs/{run['id']}/").status_code == 403
    assert bob.post(f"/api/automatic-runs/{run['id']}/cancel/").status_code == 403
    eve = client_for(outsider_user)
    assert eve.get(f"/api/automatic-runs/{run['id']}/").status_code == 404
    assert Job.objects.filter(kind="automatic").count() == 1


def test_the_schema_documents_the_run_operations(admin_user):
    out = io.StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    text = out.getvalue()
    for operation in (
        "automatic_runs_start",
        "automatic_runs_list",
        "automatic_runs_retrieve",
        "automatic_runs_cancel",
        "automatic_runs_resume",
    ):
        assert f'"operationId": "{operation}"' in text


def test_the_cli_starts_a_run_with_settings_and_an_image_filter(queue, team):
    last = team.images.order_by("id").last()
    out = io.StringIO()
    args = [team.name, "--images", f"since:{last.pk}", "--set", "points_per_side=4"]
    queue.call(lambda: call_command("run_automatic", *args, stdout=out))
    job = Job.objects.get(kind="automatic")
    assert job.progress_total == 1
    assert job.params["settings"]["points_per_side"] == 4
    assert f"run {job.pk} (automatic)" in out.getvalue()
    with pytest.raises(CommandError, match="points_per_side must be an integer"):
        call_command("run_automatic", team.name, "--set", "points_per_side=many")
    with pytest.raises(CommandError, match="image filter"):
        call_command("run_automatic", team.name, "--images", "yesterday")
    with pytest.raises(CommandError, match="cancel it before resuming"):
        call_command("run_automatic", team.name, "--resume", str(job.pk))


def test_the_web_panel_starts_and_shows_a_run(queue, team, admin_user, annotator_user):
    web = Client()
    web.force_login(annotator_user)
    assert web.post(f"/projects/{team.pk}/automatic/start/").status_code == 403
    web.force_login(admin_user)
    response = queue.call(
        web.post,
        path=f"/projects/{team.pk}/automatic/start/",
        data={"images": "all", "points_per_side": "4", "crop_n_layers": "0"},
    )
    assert response.status_code == 302
    job = Job.objects.get(kind="automatic")
    assert job.params["settings"]["points_per_side"] == 4
    assert job.params["settings"]["crop_n_layers"] == 0
    panel = web.get(f"/projects/{team.pk}/automatic/")
    assert f'data-run="{job.pk}"' in panel.content.decode()
    assert 'data-active="1"' in panel.content.decode()
    cancel = web.post(f"/projects/{team.pk}/automatic/{job.pk}/cancel/")
    assert cancel.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    bad = web.post(f"/projects/{team.pk}/automatic/start/", {"pred_iou_thresh": "high"})
    assert bad.status_code == 302
    assert Job.objects.filter(kind="automatic").count() == 1


def test_the_admin_lists_a_runs_images_read_only(queue, team, admin_user):
    queue.call(automatic_start, project=team, user=admin_user, params=FAST)
    boss = User.objects.create_superuser("root", password="root-pass-123")
    web = Client()
    web.force_login(boss)
    page = web.get("/admin/engine/automaticimage/")
    assert page.status_code == 200
    assert page.content.decode().count('class="field-status"') == 2
    assert web.get("/admin/engine/automaticimage/add/").status_code == 403
