"""Round settings and schedules (cron PeriodicTask, every N masks), the CLI and the web page."""

import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from engine.models import Job
from tests.training.rounds_data import add_scenes, deployed_parent
from training.models import RoundSettings, TrainingRound
from training.services.schedule import periodic_task_name, rounds_due

pytestmark = pytest.mark.django_db


@pytest.fixture
def ready(project):
    deployed_parent(project)
    add_scenes(project, [1, 2, 3, 4, 5], max_masks=4)
    return project


def _finish_all() -> None:
    Job.objects.filter(kind="train").update(status="succeeded", finished_at=timezone.now())


def test_round_settings_round_trip_and_sync_a_cron_periodic_task(ready, admin_client):
    project = ready
    url = f"/api/projects/{project.pk}/round-settings/"
    defaults = admin_client.get(url).json()
    assert (defaults["min_masks"], defaults["promote_margin"], defaults["every_n_masks"]) == (
        20,
        0.01,
        None,
    )
    response = admin_client.put(
        url, {"schedule_cron": "0  3 * * 1", "steps": 50, "auto_promote": True}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["schedule_cron"] == "0 3 * * 1"
    task = PeriodicTask.objects.get(name=periodic_task_name(project.pk))
    assert (task.task, json.loads(task.args), task.queue) == (
        "training.schedule.scheduled_round",
        [project.pk],
        "default",
    )
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "3", "1")
    # A bad value changes nothing, neither the settings nor the schedule.
    bad = admin_client.put(url, {"schedule_cron": "61 * * * *", "steps": 9}, format="json")
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_round_settings"
    assert admin_client.put(url, {"lr": 0}, format="json").status_code == 400
    assert admin_client.put(url, {"scope": "all"}, format="json").status_code == 400
    assert RoundSettings.objects.get(project=project).steps == 50
    assert PeriodicTask.objects.get(name=periodic_task_name(project.pk)).crontab.minute == "0"
    # Clearing the cron removes the task.
    assert admin_client.put(url, {"schedule_cron": ""}, format="json").status_code == 200
    assert not PeriodicTask.objects.filter(name=periodic_task_name(project.pk)).exists()


def test_a_cron_round_launches_through_the_scheduled_task(ready):
    from training.tasks import scheduled_round

    RoundSettings.objects.create(project=ready, min_masks=5, schedule_cron="*/5 * * * *")
    round_id = scheduled_round.apply(args=(ready.pk,)).get()
    assert isinstance(round_id, int)
    assert TrainingRound.objects.get(pk=round_id).trigger == "cron"
    assert scheduled_round.apply(args=(ready.pk,)).get() is None  # one is active: refused


def test_every_n_masks_launches_once_per_n_new_masks(ready):
    project = ready
    RoundSettings.objects.create(project=project, min_masks=5, every_n_masks=8)
    assert len(rounds_due()) == 1  # 20 accepted masks, no round yet
    assert rounds_due() == []  # the round is queued: no second launch
    _finish_all()
    assert rounds_due() == []  # nothing accepted since the snapshot
    add_scenes(project, [6, 7, 8], max_masks=2)  # 6 new masks: not yet
    assert rounds_due() == []
    add_scenes(project, [9], max_masks=2)  # 8 new masks
    launched = rounds_due()
    assert len(launched) == 1
    second = TrainingRound.objects.get(pk=launched[0])
    assert (second.number, second.trigger) == (2, "every_n")
    _finish_all()
    assert rounds_due() == []
    assert TrainingRound.objects.count() == 2


def test_cli_queues_a_round_or_runs_it_to_the_end(ready, capsys):
    project = ready
    RoundSettings.objects.create(
        project=project, min_masks=5, masks_per_image=2, auto_promote=True, promote_margin=0.0
    )
    call_command("launch_round", project.name, "--steps", "3")
    queued = TrainingRound.objects.get(number=1)
    assert queued.job.status == Job.Status.QUEUED
    assert queued.config["steps"] == 3
    assert "queued on the gpu queue" in capsys.readouterr().out
    with pytest.raises(CommandError, match="round 1 of project 'cats' is queued"):
        call_command("launch_round", project.name, "--wait")
    _finish_all()
    call_command("launch_round", str(project.pk), "--steps", "2", "--wait", "--no-progress")
    out = capsys.readouterr().out
    finished = TrainingRound.objects.get(number=2)
    assert finished.job.status == Job.Status.SUCCEEDED, finished.job.error
    assert f"model version {finished.produced_version_id} registered" in out
    assert finished.produced_version is not None
    metrics = finished.produced_version.metrics
    assert metrics["training"]["steps"] == 2
    # Auto-promotion (margin 0) deployed the child exactly when it was not worse on mIoU@1.
    better = metrics["validation"]["miou@1"] >= metrics["parent_validation"]["miou@1"]
    assert finished.job.result["promoted"] is better
    project.refresh_from_db()
    assert (project.deployed_version_id == finished.produced_version_id) is better
    with pytest.raises(CommandError, match="unknown project"):
        call_command("launch_round", "no-such-project")


def test_the_rounds_page_launches_and_lists_rounds_for_admins(ready, admin_user, annotator_user):
    project = ready
    RoundSettings.objects.create(project=project, min_masks=5)
    admin = Client()
    admin.force_login(admin_user)
    project_page = admin.get(f"/projects/{project.pk}/").content
    assert f'href="/projects/{project.pk}/rounds/"'.encode() in project_page
    page = admin.get(f"/projects/{project.pk}/rounds/")
    assert page.status_code == 200
    assert b'id="launch-form"' in page.content
    assert b"No rounds yet." in page.content
    launched = admin.post(f"/projects/{project.pk}/rounds/launch/", {"steps": "4"}, follow=True)
    assert b"Round 1 is queued." in launched.content
    assert b'data-round="1"' in launched.content
    assert b'data-cancel="1"' in launched.content
    assert TrainingRound.objects.get().config["steps"] == 4
    refused = admin.post(f"/projects/{project.pk}/rounds/launch/", {"steps": "x"}, follow=True)
    assert b"steps must be a number" in refused.content
    saved = admin.post(
        f"/projects/{project.pk}/rounds/settings/",
        {"min_masks": "7", "steps": "9", "scope": "decoder", "lr": "0.0002",
         "masks_per_image": "4", "promote_margin": "0.02", "schedule_cron": "",
         "every_n_masks": "100", "auto_promote": "on"},
        follow=True,
    )  # fmt: skip
    assert b"Round settings saved." in saved.content
    stored = RoundSettings.objects.get(project=project)
    assert (stored.min_masks, stored.every_n_masks, stored.auto_promote) == (7, 100, True)
    cancelled = admin.post(f"/projects/{project.pk}/rounds/1/cancel/", follow=True)
    assert b"Round 1 is cancelled." in cancelled.content
    annotator = Client()
    annotator.force_login(annotator_user)
    assert annotator.get(f"/projects/{project.pk}/rounds/").status_code == 403
    assert annotator.post(f"/projects/{project.pk}/rounds/launch/").status_code == 403
    assert TrainingRound.objects.count() == 1


def test_the_launch_form_asks_for_augmentation(ready, admin_user):
    RoundSettings.objects.create(project=ready, min_masks=5)
    admin = Client()
    admin.force_login(admin_user)
    assert b'name="augment"' in admin.get(f"/projects/{ready.pk}/rounds/").content
    url = f"/projects/{ready.pk}/rounds/launch/"
    refused = admin.post(url, {"augment": "1", "scope": "decoder"}, follow=True)
    assert b"augment needs scope" in refused.content
    assert not TrainingRound.objects.exists()
    admin.post(url, {"augment": "1", "scope": "full", "steps": "3"}, follow=True)
    assert TrainingRound.objects.get().config["augment"] is True


# Each setting just past its range; the ranges are training.services.round_limits'.
OUT_OF_RANGE = [
    ("steps", 10_000_001, "steps must be an integer from 1 to 10,000,000"),
    ("lr", 10, "lr must be a number from 1e-12 to 1"),
    ("lr", 1e-13, "lr must be a number from 1e-12 to 1"),
    ("masks_per_image", 5000, "masks_per_image must be an integer from 1 to 4,096"),
    ("promote_margin", 1e308, "promote_margin must be a number from 0 to 1"),
    ("min_masks", 10_000_001, "min_masks must be an integer from 1 to 10,000,000"),
    ("every_n_masks", 10_000_001, "every_n_masks must be an integer from 1 to 10,000,000"),
]


@pytest.mark.parametrize(("name", "value", "message"), OUT_OF_RANGE)
def test_round_settings_outside_the_launch_ranges_are_refused(
    ready, admin_client, name, value, message
):
    url = f"/api/projects/{ready.pk}/round-settings/"
    response = admin_client.put(url, {name: value}, format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid_round_settings"
    assert message in body["detail"]
    assert body["details"]["field"] == name
    assert not RoundSettings.objects.filter(project=ready).exists()


def test_round_settings_at_the_edges_of_their_ranges_are_stored(ready, admin_client):
    url = f"/api/projects/{ready.pk}/round-settings/"
    edges = {"steps": 10_000_000, "lr": 1, "masks_per_image": 4096, "promote_margin": 1.0,
             "min_masks": 10_000_000, "every_n_masks": 1}  # fmt: skip
    response = admin_client.put(url, edges, format="json")
    assert response.status_code == 200, response.json()
    stored = RoundSettings.objects.get(project=ready)
    assert (stored.steps, stored.lr, stored.masks_per_image) == (10_000_000, 1.0, 4096)


@pytest.mark.parametrize(("name", "value", "message"), OUT_OF_RANGE[:4])
def test_the_launch_refuses_what_the_settings_refuse(ready, admin_client, name, value, message):
    response = admin_client.post(f"/api/projects/{ready.pk}/rounds/", {name: value}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert not TrainingRound.objects.exists()


def test_stored_settings_out_of_range_refuse_every_launch(ready, admin_client):
    """A row written around the services (or before the ranges): API, cron and every-n
    launches are refused and nothing is written."""
    RoundSettings.objects.create(
        project=ready, min_masks=5, steps=10_000_001, every_n_masks=1, schedule_cron="0 3 * * *"
    )
    response = admin_client.post(f"/api/projects/{ready.pk}/rounds/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_round_settings"
    assert "the project's round settings: steps must be an integer" in response.json()["detail"]
    from training.tasks import scheduled_round

    assert scheduled_round.apply(args=(ready.pk,)).get() is None
    assert rounds_due() == []
    assert not TrainingRound.objects.exists()
    assert not Job.objects.filter(kind="train").exists()


def test_the_admin_form_checks_the_same_ranges(ready):
    from training.admin import RoundSettingsForm

    data = {"project": ready.pk, "min_masks": 20, "steps": 10_000_001, "scope": "decoder",
            "lr": 0.0001, "masks_per_image": 16, "promote_margin": 0.01, "schedule_cron": "",
            "every_n_masks": ""}  # fmt: skip
    form = RoundSettingsForm(data=data)
    assert not form.is_valid()
    assert "steps must be an integer from 1 to 10,000,000" in str(form.errors)
    form = RoundSettingsForm(data={**data, "steps": 300, "schedule_cron": " 0  3 * * * "})
    assert form.is_valid(), form.errors
    assert form.save().schedule_cron == "0 3 * * *"
