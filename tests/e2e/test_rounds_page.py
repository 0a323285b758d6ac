"""The rounds page and the data-engine dashboard in a real browser (gunicorn, Debian chromium).

Rounds page: an admin launches a retrain round, sees it queued and cancels it; launches another
that a real ``gpu`` worker takes, watches its status, progress and loss curve grow while the
page polls the API, and sees the page follow (without a reload) when another admin cancels it.
A succeeded round (rows as a worker leaves them) shows its figures and curve; too few masks are
refused with the number needed; an annotator is refused the page. Dashboard: the per-round
table and charts render, and the promote / rollback buttons change the live version. Every test
fails on any browser console error or uncaught exception.

A full round to completion is not run here: its two evaluations and the ONNX export plus check
of the new version cost minutes on the 2-core machine (tests/training/test_rounds_run.py and
test_rounds_worker.py run it without a browser).
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.utils import timezone

from annotation.models import Project
from engine.models import Deployment, Job, ModelVersion
from engine.services.jobs import job_create
from engine.services.registry import model_version_deploy
from tests.e2e.conftest import LiveWeb
from tests.training.promotion_helpers import (
    make_images,
    make_mask,
    make_version,
    round_metrics,
    validation,
)
from tests.training.rounds_data import add_scenes, deployed_parent
from tests.workers import celery_worker, wait_or_fail
from training.models import RoundSettings, TrainingRound, ValidationSplit
from training.services.rounds import round_cancel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORDS = {"alice": "alice-pass-123", "bob": "bob-pass-123"}  # tests/conftest.py's users
ROUND_TIMEOUT_MS = 180_000  # a 3-step vit_tiny round on a busy 2-core machine
STEPS_UNTIL_CANCELLED = 5_000  # a round the test cancels while it trains


@pytest.fixture
def console_errors(browser_context: Any) -> list[str]:
    """Console errors and uncaught exceptions of every page the test opens."""
    errors: list[str] = []

    def watch(page: Any) -> None:
        page.on(
            "console",
            lambda message: (
                errors.append(f"{page.url}: {message.text} ({message.location.get('url', '')})")
                if message.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda error: errors.append(f"{page.url}: uncaught {error}"))

    browser_context.on("page", watch)
    return errors


@pytest.fixture
def close_connection() -> Iterator[None]:
    """Close the test body's own database connection at the end (Playwright's sync API runs the
    body in a greenlet with a connection pytest-django does not see; left open, it blocks
    dropping the test database)."""
    from django.db import connection

    yield
    connection.close()


def log_in(page: Any, web: LiveWeb, username: str) -> None:
    page.goto(f"{web.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORDS[username])
    page.click("form button[type=submit]")
    page.wait_for_url(f"{web.url}/")


def rounds_url(web: LiveWeb, project: Project) -> str:
    return f"{web.url}/projects/{project.pk}/rounds/"


def launch(page: Any, *, steps: int, masks_per_image: int | None = None) -> None:
    form = page.locator("#launch-form")
    form.locator("input[name=steps]").fill(str(steps))
    if masks_per_image is not None:
        form.locator("input[name=masks_per_image]").fill(str(masks_per_image))
    with page.expect_navigation():
        form.locator("button[type=submit]").click()


@pytest.fixture
def trainable(project: Project) -> Project:
    """cats: the golden vit_tiny deployed, 2 synthetic scenes with 4 accepted masks each to
    train on, a third with 1 mask frozen as the validation split (as the first round would
    freeze it; one mask keeps the two evaluations of a round short), min_masks 4."""
    deployed_parent(project)
    add_scenes(project, [1, 2], max_masks=4)
    [held_out] = add_scenes(project, [3], max_masks=1)
    ValidationSplit.objects.create(project=project, image_ids=[held_out.pk], seed=0)
    RoundSettings.objects.create(project=project, min_masks=4)
    return project


def test_an_admin_launches_and_cancels_rounds_one_queued_one_running_live(
    trainable: Project,
    live_web: LiveWeb,
    browser_context: Any,
    console_errors: list[str],
    redis_broker: redis.Redis,
    tmp_path: Path,
    close_connection: None,
) -> None:
    from playwright.sync_api import expect

    project = trainable
    page = browser_context.new_page()
    log_in(page, live_web, "alice")
    page.goto(rounds_url(live_web, project))
    expect(page.locator("#rounds-table tbody")).to_contain_text("No rounds yet.")
    expect(page.locator(".page-head")).to_contain_text("(1 image, frozen")
    expect(page.locator("#loss-curve svg.chart")).to_have_count(0)
    expect(page.locator("#curve-empty")).to_contain_text("as it trains")

    # Launch: the round is queued with the steps asked for; launching again is disabled.
    launch(page, steps=3)
    expect(page.locator(".messages")).to_contain_text("Round 1 is queued.")
    first = page.locator('#rounds-table tr[data-round="1"]')
    expect(first.locator('[data-cell="status"]')).to_have_text("Queued")
    expect(first.locator("progress")).to_have_attribute("max", "3")
    expect(page.locator("#active-round")).to_contain_text("Round 1 is queued")
    expect(page.locator("#launch-form button[type=submit]")).to_be_disabled()
    expect(page.locator("#loss-curve svg.chart")).to_contain_text("no training steps yet")
    expect(page.locator("#curve-empty")).to_have_count(0)
    expect(page.locator("#rounds-live")).to_have_text("updating live")
    # The page keeps polling: its update leaves the server's rendering as it was.
    page.wait_for_timeout(2_500)
    expect(first.locator('[data-cell="status"] .badge')).to_have_class("badge badge-queued")
    expect(first.locator('[data-cell="status"]')).to_have_text("Queued")
    round_1 = TrainingRound.objects.select_related("job").get(project=project, number=1)
    assert (round_1.job.status, round_1.config["steps"]) == (Job.Status.QUEUED, 3)

    # Cancel it: the page says so, the row shows it, the launch form is open again.
    with page.expect_navigation():
        first.locator("[data-cancel]").click()
    expect(page.locator(".messages")).to_contain_text("Round 1 is cancelled.")
    expect(first.locator('[data-cell="status"]')).to_have_text("Cancelled")
    expect(first.locator("[data-cancel]")).to_have_count(0)
    expect(page.locator("#launch-form button[type=submit]")).to_be_enabled()
    round_1.job.refresh_from_db()
    assert round_1.job.status == Job.Status.CANCELLED

    # A second round, taken by a real gpu worker: the page shows it running, its progress and
    # its loss curve as they grow. The form does not offer the interaction iterations; 1
    # instead of 11 makes the steps short. Far more steps than the test waits for: it cancels
    # the round while it trains (60 steps ended before the checks below on a fast machine).
    launch(page, steps=STEPS_UNTIL_CANCELLED, masks_per_image=1)
    second = page.locator('#rounds-table tr[data-round="2"]')
    round_2 = TrainingRound.objects.get(project=project, number=2)
    assert (round_2.config["steps"], round_2.config["masks_per_image"]) == (
        STEPS_UNTIL_CANCELLED,
        1,
    )
    TrainingRound.objects.filter(pk=round_2.pk).update(config={**round_2.config, "iterations": 1})
    versions_before = ModelVersion.objects.filter(project=project).count()
    log = tmp_path / "gpu-worker.log"
    with celery_worker(queue="gpu", log=log, extra_env={"MASKLOOP_DEVICE": "cpu"}):
        expect(second.locator('[data-cell="status"]')).to_have_text(
            "Running", timeout=ROUND_TIMEOUT_MS
        )
        expect(second.locator('[data-cell="status"] .badge')).to_have_class("badge badge-running")
        page.wait_for_function(
            """() => document.querySelector('#rounds-table tr[data-round="2"] progress').value >= 2
                && (document.querySelector('#loss-curve path.chart-line')?.getAttribute('d')
                    .match(/L/g) || []).length >= 1""",
            timeout=ROUND_TIMEOUT_MS,
        )
        expect(second.locator("progress")).to_have_attribute("max", str(STEPS_UNTIL_CANCELLED))
        expect(second.locator('[data-cell="message"]')).to_contain_text("training: step")
        expect(page.locator("#curve-title")).to_have_text("round 2 · running")
        expect(page.locator("#loss-curve svg.chart")).to_contain_text("step 0")
        # The parent's figures on the validation split are in before training starts.
        round_2.refresh_from_db()
        miou = f"{round_2.parent_metrics['miou@1']:.2f}".rstrip("0").rstrip(".")
        expect(second.locator('[data-cell="miou"]')).to_have_text(f"{miou} → —")

        # Another admin cancels it (the API's service): the open page follows without a
        # reload, and opens its launch form; the worker stops at its next step.
        page.evaluate("window.notReloaded = true")
        round_cancel(training_round=round_2)
        expect(second.locator('[data-cell="status"]')).to_have_text("Cancelled", timeout=10_000)
        expect(second.locator('[data-cell="status"] .badge')).to_have_class("badge badge-cancelled")
        expect(second.locator("[data-cancel]")).to_have_count(0)
        expect(page.locator("#launch-form button[type=submit]")).to_be_enabled()
        expect(page.locator("#active-round")).to_have_count(0)
        expect(page.locator("#rounds-live")).to_have_text("")
        expect(page.locator("#curve-title")).to_have_text("round 2 · cancelled")
        assert page.evaluate("window.notReloaded") is True
        wait_or_fail(
            lambda: (
                log.read_text().count("gpu_train_round") >= 4  # 2 received, 2 returned
                and log.read_text().count("succeeded in") >= 2
            ),
            60,
            "the worker did not stop the cancelled round",
            log,
        )
    round_2.refresh_from_db()
    assert round_2.job.status == Job.Status.CANCELLED
    assert 2 <= round_2.job.progress_done < STEPS_UNTIL_CANCELLED
    assert round_2.produced_version_id is None
    assert ModelVersion.objects.filter(project=project).count() == versions_before
    # The curve stays: the cancelled round's steps, drawn on click.
    first.locator("[data-show-curve]").click()
    expect(page.locator("#curve-title")).to_have_text("round 1 · cancelled")
    expect(page.locator("#loss-curve svg.chart")).to_contain_text("no training steps yet")
    second.locator("[data-show-curve]").click()
    expect(page.locator("#curve-title")).to_have_text("round 2 · cancelled")
    expect(page.locator("#loss-curve path.chart-line")).to_have_count(1)
    assert console_errors == []


def finished_round(project: Project, admin: User) -> tuple[TrainingRound, ModelVersion]:
    """Round 1 as a worker leaves it when it succeeded: job done, loss curve, parent figures,
    the produced version with its validation metrics (rows only; nothing was trained)."""
    parent = project.deployed_version
    assert parent is not None
    child = make_version(
        project, round=1, parent=parent,
        metrics=round_metrics(validation(0.62, 0.8, 7.5), validation(0.41, 0.7, 11.0)),
    )  # fmt: skip
    job = job_create(kind=Job.Kind.TRAIN, project=project, created_by=admin, total=3)
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.SUCCEEDED, progress_done=3, finished_at=timezone.now(),
        message="round 1 succeeded",
    )  # fmt: skip
    training_round = TrainingRound.objects.create(
        project=project, number=1, job=job, parent_version=parent, produced_version=child,
        train_masks=8, train_images=2, validation_masks=1, validation_images=1,
        config={"steps": 3}, loss_curve=[[1, 0.9], [2, 0.7], [3, 0.5]],
        parent_metrics=validation(0.41, 0.7, 11.0), created_by=admin,
    )  # fmt: skip
    return training_round, child


def test_a_finished_round_shows_its_figures_too_few_masks_are_refused_and_annotators_get_403(
    trainable: Project,
    admin_user: User,
    live_web: LiveWeb,
    browser_context: Any,
    console_errors: list[str],
    redis_broker: redis.Redis,
    close_connection: None,
) -> None:
    from playwright.sync_api import expect

    project = trainable
    _, child = finished_round(project, admin_user)
    RoundSettings.objects.filter(project=project).update(min_masks=50)
    page = browser_context.new_page()
    log_in(page, live_web, "alice")
    page.goto(rounds_url(live_web, project))

    # The finished round, completed by the page from the API: figures parent -> new, version,
    # its loss curve (the newest round's is shown first), no cancel button, launch open.
    row = page.locator('#rounds-table tr[data-round="1"]')
    expect(row.locator('[data-cell="status"]')).to_have_text("Succeeded")
    expect(row.locator('[data-cell="status"] .badge')).to_have_class("badge badge-succeeded")
    expect(row.locator('[data-cell="miou"]')).to_have_text("0.41 → 0.62")
    expect(row.locator('[data-cell="clicks"]')).to_have_text("11 → 7.5")
    expect(row.locator('[data-cell="version"]')).to_have_text(f"#{child.pk}")
    assert row.locator("progress").evaluate("bar => [bar.value, bar.max]") == [3, 3]
    expect(row.locator("[data-cancel]")).to_have_count(0)
    expect(page.locator("#curve-title")).to_have_text("round 1 · succeeded")
    curve = page.locator("#loss-curve svg.chart")
    expect(curve.locator("path.chart-line")).to_have_count(1)
    assert curve.locator("path.chart-line").get_attribute("d").count("L") == 2
    expect(curve).to_contain_text("step 3")
    expect(page.locator("#rounds-live")).to_have_text("")
    expect(page.locator("#launch-form button[type=submit]")).to_be_enabled()

    # Too few masks: refused with the number needed; nothing is written or queued.
    launch(page, steps=3)
    # 2 scenes x 4 masks outside the validation split: 8 training masks, 42 short of 50.
    expect(page.locator(".messages")).to_contain_text(
        "The round was not launched: a round needs at least 50 accepted masks"
    )
    expect(page.locator(".messages")).to_contain_text("has 8: 42 more needed")
    expect(page.locator("#rounds-table tbody tr")).to_have_count(1)
    assert TrainingRound.objects.filter(project=project).count() == 1
    assert redis_broker.llen("gpu") == 0
    expect(page.locator("#curve-title")).to_have_text("round 1 · succeeded")  # polls done
    assert console_errors == []

    page.close()
    browser_context.clear_cookies()  # alice logs out
    annotator_page = browser_context.new_page()
    log_in(annotator_page, live_web, "bob")
    response = annotator_page.goto(rounds_url(live_web, project))
    assert response is not None
    assert response.status == 403
    api = annotator_page.request.get(f"{live_web.url}/api/projects/{project.pk}/rounds/")
    assert api.status == 403
    # Chromium reports the refused document itself as a failed resource, and the favicon the
    # bare error page does not link; nothing else may fail.
    refused = f"status of 403 (Forbidden) ({rounds_url(live_web, project)})"
    favicon = f"status of 404 (Not Found) ({live_web.url}/favicon.ico)"
    assert [e for e in console_errors if not e.endswith((refused, favicon))] == []


@pytest.fixture
def engine(project: Project, annotator_user: User) -> tuple[ModelVersion, ModelVersion]:
    """cats: the seed (imported, deployed) and round 1's child with its validation metrics;
    two masks made with the seed on one image, one with the child."""
    seed = make_version(project)
    model_version_deploy(project=project, version=seed)
    child = make_version(
        project, round=1, parent=seed,
        metrics=round_metrics(validation(0.62, 0.8, 7.5), validation(0.41, 0.7, 11.0), 30.0),
    )  # fmt: skip
    a, b = make_images(project, 2)
    make_mask(a, version=seed, annotator=annotator_user, seconds=10.0, clicks=4)
    make_mask(a, version=seed, annotator=annotator_user, seconds=20.0, clicks=6)
    make_mask(b, version=child, annotator=annotator_user, seconds=6.0, clicks=2)
    return seed, child


def test_the_dashboard_shows_rounds_and_promotes_and_rolls_back(
    engine: tuple[ModelVersion, ModelVersion],
    live_web: LiveWeb,
    browser_context: Any,
    console_errors: list[str],
    redis_broker: redis.Redis,
    close_connection: None,
) -> None:
    from playwright.sync_api import expect

    seed, child = engine
    project = seed.project
    page = browser_context.new_page()
    log_in(page, live_web, "alice")
    page.goto(f"{live_web.url}/projects/{project.pk}/dashboard/")

    # The table: newest round first, the seed's figures measured in round 1 on the same split.
    rows = page.locator("#rounds-table tbody tr")
    expect(rows).to_have_count(2)
    child_row = page.locator(f'#rounds-table tr[data-version="{child.pk}"]')
    seed_row = page.locator(f'#rounds-table tr[data-version="{seed.pk}"]')
    expect(rows.first).to_have_attribute("data-version", str(child.pk))
    expect(child_row.locator('[data-cell="round"]')).to_have_text("1")
    expect(child_row.locator('[data-cell="miou_1"]')).to_have_text("0.620")
    expect(child_row.locator('[data-cell="clicks_to_target"]')).to_have_text("7.50")
    expect(child_row.locator('[data-cell="training_seconds"]')).to_have_text("30")
    expect(child_row.locator('[data-cell="seconds_per_mask"]')).to_have_text("6.0")
    expect(seed_row.locator('[data-cell="round"]')).to_have_text("0")
    expect(seed_row.locator('[data-cell="miou_1"]')).to_have_text("0.410")
    expect(seed_row.locator('[data-cell="masks"]')).to_have_text("2")
    expect(seed_row.locator('[data-cell="masks_per_image"]')).to_have_text("2.0")
    expect(seed_row.locator('[data-cell="seconds_per_mask"]')).to_have_text("15.0")
    expect(seed_row.locator("[data-live]")).to_be_visible()
    expect(seed_row.locator("[data-promote]")).to_have_count(0)
    expect(page.locator("#rollback-button")).to_be_disabled()

    # The charts: six, one point (or bar) per round, round labels on the x axis.
    charts = page.locator("figure[data-chart] svg.chart")
    expect(charts).to_have_count(6)
    miou_chart = page.locator('figure[data-field="miou_1"] svg.chart')
    expect(miou_chart.locator("circle.chart-dot")).to_have_count(2)
    expect(page.locator('figure[data-field="masks_per_image"] rect.chart-bar')).to_have_count(2)
    expect(page.locator('figure[data-field="training_seconds"] rect.chart-bar')).to_have_count(1)
    expect(miou_chart).to_contain_text(f"r1 · v{child.pk}")
    expect(page.locator("#lineage li[data-version]")).to_have_count(2)

    # Promote the child: it is live on the page, in the database, and a rollback is offered.
    with page.expect_navigation():
        child_row.locator(f'[data-promote="{child.pk}"]').click()
    expect(page.locator(".messages")).to_contain_text(f"Version {child.pk} is live")
    expect(child_row.locator("[data-live]")).to_be_visible()
    expect(seed_row.locator("[data-live]")).to_have_count(0)
    expect(seed_row.locator(f'[data-promote="{seed.pk}"]')).to_be_visible()
    rollback = page.locator("#rollback-button")
    expect(rollback).to_be_enabled()
    expect(rollback).to_have_text(f"Roll back to v{seed.pk}")
    expect(
        page.locator(f'#lineage li[data-version="{child.pk}"] [data-deployment]')
    ).to_contain_text("promote")
    project.refresh_from_db()
    assert project.deployed_version_id == child.pk

    # Roll back: the seed is live again and there is nothing left to roll back to.
    with page.expect_navigation():
        rollback.click()
    expect(page.locator(".messages")).to_contain_text(f"Rolled back: version {seed.pk} is live")
    expect(seed_row.locator("[data-live]")).to_be_visible()
    expect(child_row.locator(f'[data-promote="{child.pk}"]')).to_be_visible()
    expect(page.locator("#rollback-button")).to_be_disabled()
    project.refresh_from_db()
    assert project.deployed_version_id == seed.pk
    actions = list(
        Deployment.objects.filter(project=project).order_by("id").values_list("action", flat=True)
    )
    assert actions == [Deployment.Action.PROMOTE, Deployment.Action.ROLLBACK]
    assert console_errors == []
