"""The admin pages in a 1024 px wide window (Debian chromium): wide tables scroll inside their
card instead of being cut off or running past it, so every button in them can be reached (the
rounds page's Cancel, the dashboard's Promote, the project page's run and job tables); the
dashboard's Roll back button keeps one line and its lineage list has no stray bullets."""

from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Project
from engine.models import Job
from engine.services.jobs import job_create
from engine.services.registry import model_version_deploy
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_review import closes_its_connection
from tests.e2e.test_rounds_page import log_in
from tests.training.promotion_helpers import make_version, round_metrics, validation
from training.models import TrainingRound
from training.services.promotion import version_promote

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NARROW = {"width": 1024, "height": 700}

# Buttons, links and tables of the page's cards that cannot be seen: cut off by a card that
# does not scroll, or drawn past the card's right edge.
UNREACHABLE = """() => {
    const overflow = (e) => getComputedStyle(e).overflowX;
    const name = (e) => `${e.tagName.toLowerCase()} "${e.textContent.trim().slice(0, 30)}"`
        + ` in #${e.closest('.card').id || e.closest('.card').className}`;
    const problems = [];
    for (const card of document.querySelectorAll('main .card')) {
        const edge = card.getBoundingClientRect().right;
        for (const element of card.querySelectorAll('table, button, a')) {
            if (!element.getClientRects().length) continue;  // not shown (a closed <details>)
            const box = element.getBoundingClientRect();
            let right = box.right;
            let cut = false;
            for (let a = element.parentElement; a !== card.parentElement; a = a.parentElement) {
                if (overflow(a) === 'visible') continue;
                const clip = a.getBoundingClientRect();
                const scrolls = overflow(a) === 'auto' || overflow(a) === 'scroll';
                if (scrolls) right = Math.min(right, clip.right);
                else if (box.right > clip.right + 1 || box.left < clip.left - 1) cut = true;
            }
            if (cut) problems.push(`cut off: ${name(element)}`);
            else if (right > edge + 1) problems.push(`past the card: ${name(element)}`);
        }
    }
    return problems;
}"""


def narrow_page(web: LiveWeb, browser_context: Any) -> Any:
    page = browser_context.new_page()
    page.set_viewport_size(NARROW)
    log_in(page, web, "alice")
    return page


def engine_rows(project: Project, admin: User) -> dict[str, Any]:
    """A seed and its round-1 child (promoted over it), named like the demo's; round 2 from the
    child, running; an automatic run and an export job, running too."""
    seed = make_version(project, name="seed (synthetic domain A)")
    model_version_deploy(project=project, version=seed)
    child = make_version(
        project, round=1, parent=seed, name="round 1 (synthetic domains A and B)",
        metrics=round_metrics(validation(0.62, 0.8, 7.5), validation(0.41, 0.7, 11.0), 30.0),
    )  # fmt: skip
    version_promote(version=child, user=admin, reason="round 1: +0.21 mIoU@1")
    train = job_create(kind=Job.Kind.TRAIN, project=project, created_by=admin, total=200)
    Job.objects.filter(pk=train.pk).update(
        status=Job.Status.RUNNING, progress_done=40, message="step 40/200, loss 0.4127"
    )
    TrainingRound.objects.create(
        project=project, number=2, job=train, parent_version=child, train_masks=120,
        train_images=24, validation_masks=12, validation_images=3, config={"steps": 200},
        loss_curve=[[1, 0.9], [40, 0.41]], created_by=admin,
    )  # fmt: skip
    run = job_create(
        kind=Job.Kind.AUTOMATIC, project=project, params={"model_version_id": child.pk}, total=25
    )
    Job.objects.filter(pk=run.pk).update(
        status=Job.Status.RUNNING, progress_done=11,
        result={"masks": 1234, "failed": 0, "images_per_s": 0.52, "eta_s": 27},
    )  # fmt: skip
    job_create(kind=Job.Kind.EXPORT, project=project, params={"format": "coco"}, total=25)
    return {"seed": seed, "child": child, "run": run}


def open_narrow(web: LiveWeb, browser_context: Any, url: str, ready: str) -> Any:
    page = narrow_page(web, browser_context)
    page.goto(f"{web.url}{url}")
    page.wait_for_selector(ready)
    return page


@closes_its_connection
def test_at_1024_px_the_rounds_pages_cancel_button_can_be_reached(
    project: Project, admin_user: User, live_web: LiveWeb, browser_context: Any
) -> None:
    engine_rows(project, admin_user)
    url = f"/projects/{project.pk}/rounds/"
    page = open_narrow(
        live_web, browser_context, url, '#rounds-table tr[data-round="2"] [data-cancel]'
    )
    assert page.evaluate(UNREACHABLE) == []


@closes_its_connection
def test_at_1024_px_the_dashboards_promote_button_can_be_reached(
    project: Project, admin_user: User, live_web: LiveWeb, browser_context: Any
) -> None:
    rows = engine_rows(project, admin_user)
    url = f"/projects/{project.pk}/dashboard/"
    page = open_narrow(live_web, browser_context, url, f'[data-promote="{rows["seed"].pk}"]')
    assert page.evaluate(UNREACHABLE) == []


@closes_its_connection
def test_at_1024_px_the_project_pages_run_and_job_tables_stay_inside_their_cards(
    project: Project, admin_user: User, live_web: LiveWeb, browser_context: Any
) -> None:
    rows = engine_rows(project, admin_user)
    cancel = f'#automatic-runs tr[data-run="{rows["run"].pk}"] [data-action=cancel]'
    page = open_narrow(live_web, browser_context, f"/projects/{project.pk}/", cancel)
    assert page.evaluate(UNREACHABLE) == []
    kinds = page.locator("#jobs-table tr[data-job]").evaluate_all(
        "rows => rows.map((row) => row.dataset.kind)"
    )
    # Every kind, newest first (the promotion queued the embeddings of the new version).
    assert kinds == ["export", "automatic", "train", "embed"]


@closes_its_connection
def test_the_dashboards_roll_back_button_keeps_one_line(
    project: Project, admin_user: User, live_web: LiveWeb, browser_context: Any
) -> None:
    rows = engine_rows(project, admin_user)
    page = narrow_page(live_web, browser_context)
    for width in (1440, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_web.url}/projects/{project.pk}/dashboard/")
        rollback = page.locator("#rollback-button")
        assert rollback.inner_text() == f"Roll back to v{rows['seed'].pk}"
        lines = rollback.evaluate(
            """(button) => {
                const range = document.createRange();
                range.selectNodeContents(button);
                return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
            }"""
        )
        assert lines == 1, width


@closes_its_connection
def test_the_dashboards_lineage_list_has_no_bullets(
    project: Project, admin_user: User, live_web: LiveWeb, browser_context: Any
) -> None:
    engine_rows(project, admin_user)
    url = f"/projects/{project.pk}/dashboard/"
    page = open_narrow(live_web, browser_context, url, "#lineage")
    markers = page.locator("#lineage li[data-version]").evaluate_all(
        "items => items.map((item) => getComputedStyle(item).listStyleType)"
    )
    assert markers == ["none", "none"]  # the child's "└" is the only mark
