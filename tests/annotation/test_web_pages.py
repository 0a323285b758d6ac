"""Issue 4 pages through Django's test client: progress on the project list and page, the
image grid's status, annotator figures, the review queue and the stats pages, and who may see
each (outsiders 404, too-low roles 403)."""

import datetime as dt
import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from annotation.models import Image, Mask, Project
from annotation.services.leases import image_lease_take, image_mark_done
from annotation.services.masks import mask_create
from annotation.services.review import mask_approve, mask_reject
from engine.models import ModelVersion
from tests.annotation.workflow import make_images, member, rle_of, square

pytestmark = pytest.mark.django_db


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def html_of(user: User, url: str) -> str:
    response = logged_in(user).get(url)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def json_script(html: str, element_id: str) -> Any:
    found = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S
    )
    assert found is not None, f"no json_script #{element_id}"
    return json.loads(found.group(1))


def add_mask(
    image: Image,
    annotator: User | None,
    *,
    seconds: float | None = None,
    clicks: int | None = None,
    days_ago: int = 0,
    y0: int = 5,
) -> Mask:
    mask = mask_create(
        image=image,
        rle=rle_of(square(y0=y0, y1=y0 + 10)),
        source="assisted",
        annotator=annotator,
        seconds_spent=seconds,
        clicks=clicks,
    )
    if days_ago:
        created = timezone.now() - dt.timedelta(days=days_ago)
        Mask.objects.filter(pk=mask.pk).update(created_at=created)
    return mask


@pytest.fixture
def reviewer(project: Project) -> User:
    return member(project, "rita", "reviewer")


@pytest.fixture
def carol(project: Project) -> User:
    return member(project, "carol", "annotator")


# --- project list ------------------------------------------------------------------------------


def test_the_project_list_shows_images_done_of_total_masks_and_my_masks_today(
    project, annotator_user, admin_user
):
    images = make_images(project, 4)
    image_mark_done(image=images[0], user=annotator_user)
    add_mask(images[0], annotator_user)
    add_mask(images[1], annotator_user)
    add_mask(images[1], annotator_user, days_ago=2)  # accepted, but not today
    add_mask(images[2], admin_user)
    html = html_of(annotator_user, "/")
    row = re.search(r"<tr>\s*<td>\s*<a class=\"strong\"[^>]*>cats</a>.*?</tr>", html, re.S)
    assert row is not None
    cells = row.group(0)
    assert re.search(r'data-progress="images-done">1<', cells)
    assert re.search(r'data-count="images">4<', cells)
    assert re.search(r'data-count="accepted">4<', cells)
    assert re.search(r'data-count="mine-today">2<', cells)
    assert f'href="/projects/{project.pk}/annotate/"' in cells
    assert f'href="/projects/{project.pk}/stats/annotators/{annotator_user.pk}/"' in cells
    assert f"/projects/{project.pk}/review/" not in cells  # annotators do not review


def test_the_project_list_links_reviewers_to_the_queue_and_project_stats(project, reviewer):
    html = html_of(reviewer, "/")
    assert f'href="/projects/{project.pk}/review/" data-link="review"' in html
    assert f'href="/projects/{project.pk}/stats/" data-link="stats"' in html


# --- project page ------------------------------------------------------------------------------


def test_the_project_page_shows_stage_deployed_version_and_progress(project, annotator_user):
    version = ModelVersion.objects.create(
        project=project, name="round 2", arch="vit_b", checkpoint_key="m/a", sha256="a" * 64
    )
    project.deployed_version = version
    project.save()
    images = make_images(project, 3)
    image_mark_done(image=images[2], user=annotator_user)
    add_mask(images[2], annotator_user)
    html = html_of(annotator_user, f"/projects/{project.pk}/")
    assert "Assisted-manual" in html
    deployed = re.search(
        r'id="deployed-version">(.*?)</span>\s*<span class="stat-label">', html, re.S
    )
    assert deployed is not None
    assert "round 2" in deployed.group(1)
    assert f"#{version.pk}" in deployed.group(1)
    assert re.search(r'data-progress="images-done">1<', html)
    assert re.search(r'<span data-count="images">3<', html)
    assert re.search(r'data-count="accepted">1<', html)
    assert f'href="/projects/{project.pk}/annotate/"' in html


def test_the_project_page_without_a_deployed_version_says_none(project, annotator_user):
    html = html_of(annotator_user, f"/projects/{project.pk}/")
    assert re.search(r'id="deployed-version">none<', html)


def test_the_image_grid_shows_todo_in_progress_and_done(project, annotator_user, carol):
    todo, leased, done, expired = make_images(project, 4)
    image_lease_take(image=leased, user=carol)
    image_mark_done(image=done, user=annotator_user)
    image_lease_take(image=expired, user=carol, now=timezone.now() - dt.timedelta(hours=2))
    add_mask(done, annotator_user)
    add_mask(done, annotator_user, y0=12)
    html = html_of(annotator_user, f"/projects/{project.pk}/")
    states = dict(re.findall(r'<li class="tile" data-image="(\d+)" data-status="([a-z_]+)">', html))
    assert states == {
        str(todo.pk): "todo",
        str(leased.pk): "in_progress",
        str(done.pk): "done",
        str(expired.pk): "todo",  # an expired lease holds nothing
    }
    assert 'title="leased to carol"' in html
    assert f'href="/projects/{project.pk}/annotate/?image={todo.pk}"' in html
    counts = dict(re.findall(r'data-state-count="([a-z_]+)">(\d+)<', html))
    assert counts == {"todo": "2", "in_progress": "1", "done": "1", "skipped": "0"}
    tile = re.search(rf'data-image="{done.pk}".*?</li>', html, re.S)
    assert tile is not None
    assert "<span data-masks>2</span> masks" in tile.group(0)


@pytest.mark.parametrize(
    ("state", "expected"), [("todo", [0, 3]), ("in_progress", [1]), ("done", [2])]
)
def test_the_image_grid_filters_by_status(project, annotator_user, carol, state, expected):
    images = make_images(project, 4)
    image_lease_take(image=images[1], user=carol)
    image_mark_done(image=images[2], user=annotator_user)
    html = html_of(annotator_user, f"/projects/{project.pk}/?status={state}")
    shown = [int(pk) for pk in re.findall(r'<li class="tile" data-image="(\d+)"', html)]
    assert shown == [images[i].pk for i in expected]


def test_an_unknown_status_filter_shows_every_image(project, annotator_user):
    make_images(project, 3)
    html = html_of(annotator_user, f"/projects/{project.pk}/?status=bogus")
    assert html.count('class="tile"') == 3


def test_reviewers_see_every_annotator_on_the_project_page(
    project, reviewer, annotator_user, carol
):
    first, second = make_images(project, 2)
    add_mask(first, annotator_user, seconds=10.0, clicks=2)
    add_mask(second, annotator_user, seconds=20.0, clicks=4, y0=12)
    add_mask(second, carol, seconds=7.0, clicks=1)
    html = html_of(reviewer, f"/projects/{project.pk}/")
    rows = dict(re.findall(r'<tr data-annotator="(\d+)">(.*?)</tr>', html, re.S))
    assert set(rows) == {str(annotator_user.pk), str(carol.pk)}
    bob = rows[str(annotator_user.pk)]
    assert 'data-cell="masks">2<' in bob
    assert 'data-cell="seconds_per_mask">15.0<' in bob
    assert 'data-cell="clicks_per_mask">3.0<' in bob
    assert 'data-cell="seconds_per_mask">7.0<' in rows[str(carol.pk)]
    pending = re.search(r'data-count="review-pending">(\d+)<', html)
    assert pending is not None
    assert pending.group(1) == "3"


def test_an_annotator_sees_only_their_own_figures_on_the_project_page(
    project, annotator_user, carol
):
    (image,) = make_images(project, 1)
    add_mask(image, annotator_user, seconds=12.0, clicks=3)
    add_mask(image, carol, seconds=30.0, clicks=9, y0=12)
    html = html_of(annotator_user, f"/projects/{project.pk}/")
    rows = dict(re.findall(r'<tr data-annotator="(\d+)">(.*?)</tr>', html, re.S))
    assert list(rows) == [str(annotator_user.pk)]
    assert 'data-cell="seconds_per_mask">12.0<' in rows[str(annotator_user.pk)]
    assert "review-link" not in html
    assert (
        f'href="/projects/{project.pk}/stats/annotators/{annotator_user.pk}/" id="stats-link"'
        in html
    )


# --- review queue ------------------------------------------------------------------------------


def test_the_review_queue_is_for_reviewers_and_admins(
    project, annotator_user, reviewer, admin_user, outsider_user
):
    url = f"/projects/{project.pk}/review/"
    assert Client().get(url).status_code == 302
    assert logged_in(outsider_user).get(url).status_code == 404
    assert logged_in(annotator_user).get(url).status_code == 403
    assert logged_in(reviewer).get(url).status_code == 200
    assert logged_in(admin_user).get(url).status_code == 200


def test_the_review_queue_lists_images_with_unreviewed_masks_and_their_rles(
    project, annotator_user, reviewer
):
    pending_image, reviewed_image, empty_image = make_images(project, 3)
    first = add_mask(pending_image, annotator_user, clicks=2, seconds=4.5)
    approved = add_mask(pending_image, annotator_user, y0=12)
    second = add_mask(pending_image, annotator_user, y0=18)
    rejected = add_mask(reviewed_image, annotator_user)
    mask_approve(mask=approved, reviewer=reviewer)
    mask_reject(mask=rejected, reviewer=reviewer, reason="too coarse")
    html = html_of(reviewer, f"/projects/{project.pk}/review/")
    queued = [int(pk) for pk in re.findall(r'data-select-image="(\d+)"', html)]
    assert queued == [pending_image.pk]
    rows = [int(pk) for pk in re.findall(r'<li class="mask-row" data-mask-id="(\d+)"', html)]
    assert rows == [first.pk, second.pk]
    assert re.search(r'data-count="queue-images">1<', html)
    assert re.search(r'data-count="queue-masks">2<', html)
    assert "by bob" in html
    assert "2 clicks" in html
    data = json_script(html, "review-data")
    (entry,) = data["images"]
    assert entry["id"] == pending_image.pk
    assert (entry["width"], entry["height"]) == (pending_image.width, pending_image.height)
    assert entry["display_url"] == f"/api/images/{pending_image.pk}/display/"
    assert [m["id"] for m in entry["masks"]] == [first.pk, second.pk]
    first.refresh_from_db()
    assert entry["masks"][0]["rle"] == {
        "size": [pending_image.height, pending_image.width],
        "counts": first.rle_counts,
    }
    assert empty_image.pk not in queued


def test_a_rejected_mask_leaves_the_review_queue(project, annotator_user, reviewer):
    (image,) = make_images(project, 1)
    mask = add_mask(image, annotator_user)
    url = f"/projects/{project.pk}/review/"
    assert f'data-mask-id="{mask.pk}"' in html_of(reviewer, url)
    mask_reject(mask=mask, reviewer=reviewer, reason="leaks into the background")
    html = html_of(reviewer, url)
    assert f'data-mask-id="{mask.pk}"' not in html
    assert 'id="review-empty"' in html


def test_the_review_queue_can_be_narrowed_to_one_annotator(
    project, annotator_user, carol, reviewer
):
    first, second = make_images(project, 2)
    add_mask(first, annotator_user)
    by_carol = add_mask(second, carol)
    html = html_of(reviewer, f"/projects/{project.pk}/review/?annotator={carol.pk}")
    assert re.findall(r'data-select-image="(\d+)"', html) == [str(second.pk)]
    assert re.findall(r'data-mask-id="(\d+)"', html) == [str(by_carol.pk)]
    assert re.search(r'data-count="queue-masks">1<', html)


def test_the_review_queue_is_paginated(project, annotator_user, reviewer):
    for image in make_images(project, 23):
        add_mask(image, annotator_user)
    url = f"/projects/{project.pk}/review/"
    first = html_of(reviewer, url)
    second = html_of(reviewer, url + "?page=2")
    assert len(re.findall(r"data-select-image=", first)) == 20
    assert len(re.findall(r"data-select-image=", second)) == 3
    assert re.search(r'data-count="queue-images">23<', second)


# --- stats pages -------------------------------------------------------------------------------


def test_the_project_stats_page_is_for_reviewers_and_admins(
    project, annotator_user, reviewer, admin_user, outsider_user
):
    url = f"/projects/{project.pk}/stats/"
    assert logged_in(outsider_user).get(url).status_code == 404
    assert logged_in(annotator_user).get(url).status_code == 403
    assert logged_in(reviewer).get(url).status_code == 200
    assert logged_in(admin_user).get(url).status_code == 200


def test_the_project_stats_page_shows_totals_days_and_annotators(
    project, annotator_user, carol, reviewer
):
    first, second = make_images(project, 2)
    image_mark_done(image=first, user=annotator_user)
    add_mask(first, annotator_user, seconds=10.0, clicks=2)
    add_mask(first, annotator_user, seconds=20.0, clicks=4, y0=12)
    add_mask(second, carol, seconds=30.0, clicks=6)
    add_mask(second, carol, seconds=50.0, clicks=8, y0=12, days_ago=3)
    add_mask(second, carol, seconds=99.0, clicks=9, y0=18, days_ago=40)  # outside 30 days
    html = html_of(reviewer, f"/projects/{project.pk}/stats/")
    totals = dict(re.findall(r'data-total="([a-z_]+)">([^<]*)<', html))
    assert totals == {
        "masks": "4",
        "images_done": "1",
        "images_total": "2",
        "seconds_per_mask": "27.5",
        "clicks_per_mask": "5.0",
        "masks_per_image": "2.0",
        "masks_rejected": "0",
        "masks_reviewed": "0",
    }
    assert 'data-cell="masks_rejected" title="0 of 0 reviewed">—<' in html
    today = timezone.localdate().isoformat()
    three_days_ago = (timezone.localdate() - dt.timedelta(days=3)).isoformat()
    days = re.findall(r'<tr data-date="([0-9-]+)">', html)
    assert days == [today, three_days_ago]
    today_row = re.search(rf'<tr data-date="{today}">(.*?)</tr>', html, re.S)
    assert today_row is not None
    assert 'data-cell="masks">3<' in today_row.group(1)
    assert 'data-cell="seconds_per_mask">20.0<' in today_row.group(1)
    assert 'data-cell="masks_per_image">1.5<' in today_row.group(1)
    annotators = dict(re.findall(r'<tr data-annotator="(\d+)">(.*?)</tr>', html, re.S))
    assert 'data-cell="masks">2<' in annotators[str(carol.pk)]
    assert 'data-cell="seconds_per_mask">40.0<' in annotators[str(carol.pk)]
    chart = json_script(html, "stats-data")
    assert len(chart["per_day"]) == 30
    assert chart["per_day"][-1]["date"] == today
    assert chart["per_day"][-1]["masks"] == 3
    assert chart["per_day"][0]["seconds_per_mask"] is None
    assert html.count("<figure") == 4


def test_the_stats_period_follows_the_days_parameter(project, annotator_user, reviewer):
    (image,) = make_images(project, 1)
    add_mask(image, annotator_user, seconds=5.0, clicks=1, days_ago=40)
    url = f"/projects/{project.pk}/stats/"

    def per_day(query: str) -> list[dict[str, Any]]:
        return json_script(html_of(reviewer, url + query), "stats-data")["per_day"]

    ninety = per_day("?days=90")
    assert len(ninety) == 90
    assert sum(day["masks"] for day in ninety) == 1
    assert sum(day["masks"] for day in per_day("?days=7")) == 0
    assert len(per_day("?days=7")) == 7
    assert len(per_day("?days=abc")) == 30  # malformed: the default
    assert len(per_day("?days=5000")) == 366  # clamped to the longest window


def test_an_annotator_sees_their_own_stats_page_only(
    project, annotator_user, carol, reviewer, outsider_user
):
    (image,) = make_images(project, 1)
    add_mask(image, annotator_user, seconds=8.0, clicks=2)
    add_mask(image, carol, seconds=40.0, clicks=10, y0=12)
    own = f"/projects/{project.pk}/stats/annotators/{annotator_user.pk}/"
    other = f"/projects/{project.pk}/stats/annotators/{carol.pk}/"
    html = html_of(annotator_user, own)
    totals = dict(re.findall(r'data-total="([a-z_]+)">([^<]*)<', html))
    assert totals["masks"] == "1"
    assert totals["seconds_per_mask"] == "8.0"
    assert 'id="annotator-table"' not in html
    assert logged_in(annotator_user).get(other).status_code == 403
    assert logged_in(outsider_user).get(own).status_code == 404
    carol_html = html_of(reviewer, other)
    assert dict(re.findall(r'data-total="([a-z_]+)">([^<]*)<', carol_html))["masks"] == "1"
    assert "carol in cats" in carol_html


def test_the_stats_page_of_someone_outside_the_project_is_404(project, reviewer, outsider_user):
    url = f"/projects/{project.pk}/stats/annotators/{outsider_user.pk}/"
    assert logged_in(reviewer).get(url).status_code == 404
    assert (
        logged_in(reviewer).get(f"/projects/{project.pk}/stats/annotators/999999/").status_code
        == 404
    )


def test_favicon_redirects_to_the_logo_for_pages_that_name_no_icon() -> None:
    from django.contrib.staticfiles import finders

    response = Client().get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("/annotation/logo.svg")
    assert finders.find("annotation/logo.svg") is not None


def test_a_page_beyond_the_users_role_says_which_role_it_needs(project, annotator_user):
    response = logged_in(annotator_user).get(f"/projects/{project.pk}/review/")
    assert response.status_code == 403
    html = response.content.decode()
    assert 'id="error-page" data-status="403"' in html
    assert escape(f"this needs the reviewer role in project {project.name!r}") in html
    assert 'href="/"' in html  # back to the project list, inside the site's frame
    assert annotator_user.username in html


def test_a_hidden_project_answers_the_sites_not_found_page(project, outsider_user):
    response = logged_in(outsider_user).get(f"/projects/{project.pk}/")
    assert response.status_code == 404
    html = response.content.decode()
    assert 'id="error-page" data-status="404"' in html
    assert f"/projects/{project.pk}/" in html


def test_the_server_error_page_renders_without_a_request() -> None:
    from django.test import RequestFactory
    from django.views.defaults import server_error

    # Django renders 500.html with an empty context: no user, no messages.
    response = server_error(RequestFactory().get("/projects/1/"))
    assert response.status_code == 500
    assert b'data-status="500"' in response.content


def test_a_form_sent_without_its_csrf_token_gets_the_sites_expired_form_page(project, admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post(f"/projects/{project.pk}/stage/", {"stage": "semi_automatic"})
    assert response.status_code == 403
    assert b'data-status="403-csrf"' in response.content
    project.refresh_from_db()
    assert project.stage != "semi_automatic"
