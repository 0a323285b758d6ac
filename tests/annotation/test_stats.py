"""Stats (s/mask, clicks/mask, masks/image per day and per annotator) against hand-computed
values, their permissions, and the progress counts of the project API."""

import csv
import datetime as dt
import io

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from annotation.models import Image, Mask, Project
from annotation.selectors.stats import annotator_stats, project_stats
from annotation.services.categories import category_create
from annotation.services.masks import mask_create
from engine.models import ModelVersion
from tests.annotation.workflow import make_images, member, rle_of, square
from tests.factories import client_for

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _made(
    image: Image,
    user: User | None,
    when: dt.datetime,
    *,
    seconds: float | None,
    clicks: int | None,
    status: str = "accepted",
    source: str = "assisted",
) -> Mask:
    mask = mask_create(
        image=image,
        rle=rle_of(square()),
        source=source,
        status=status,
        annotator=user,
        seconds_spent=seconds,
        clicks=clicks,
    )
    Mask.objects.filter(pk=mask.pk).update(created_at=when)
    return mask


@pytest.fixture
def rows(project: Project, annotator_user: User) -> dict[str, User]:
    """bob: 2 masks on image 1 two days ago (10 s/2 clicks, 20 s/4 clicks), 1 on image 2
    today (30 s/3 clicks). carol: today 1 on image 2 (60 s, clicks unknown) and 1 later
    rejected on image 3 (40 s/5 clicks). Not counted: bob's mask 3 days ago, an automatic
    mask and a proposed mask today. Image 1 is done; image 4 has nothing."""
    carol = member(project, "carol", "annotator")
    one, two, three, _ = make_images(project, 4)
    Image.objects.filter(pk=one.pk).update(status="done")
    bob = annotator_user
    _made(one, bob, NOW - 2 * DAY, seconds=10, clicks=2)
    _made(one, bob, NOW - 2 * DAY + dt.timedelta(hours=3), seconds=20, clicks=4)
    approved = _made(two, bob, NOW - dt.timedelta(hours=1), seconds=30, clicks=3)
    Mask.objects.filter(pk=approved.pk).update(reviewed_at=NOW)
    _made(two, carol, NOW, seconds=60, clicks=None)
    _made(three, carol, NOW - dt.timedelta(hours=2), seconds=40, clicks=5, status="rejected")
    _made(three, bob, NOW - 3 * DAY, seconds=1000, clicks=100)
    _made(three, None, NOW, seconds=None, clicks=None, source="automatic")
    _made(three, bob, NOW, seconds=500, clicks=50, status="proposed")
    return {"bob": bob, "carol": carol}


def test_project_stats_match_the_hand_computed_figures(project, rows):
    stats = project_stats(project=project, days=3, now=NOW)
    assert stats["totals"] == {
        "masks": 5,
        "seconds_per_mask": pytest.approx((10 + 20 + 30 + 60 + 40) / 5),
        "clicks_per_mask": pytest.approx((2 + 4 + 3 + 5) / 4),
        "images_total": 4,
        "images_done": 1,
        "images_skipped": 0,
        "masks_per_image": pytest.approx(5 / 3),
        # bob's approved mask and carol's rejected one (reviewed by its status alone)
        "masks_reviewed": 2,
        "masks_rejected": 1,
        "rejection_rate": pytest.approx(0.5),
        "prefilled": 0,
        "prefill_kept": 0,
        "prefill_rejected": 0,
        "prefill_pending": 0,
    }
    assert stats["per_day"] == [
        {
            "date": dt.date(2026, 3, 8),
            "masks": 2,
            "seconds_per_mask": pytest.approx(15),
            "clicks_per_mask": pytest.approx(3),
            "masks_per_image": pytest.approx(2),
            "prefilled": 0,
        },
        {
            "date": dt.date(2026, 3, 9),
            "masks": 0,
            "seconds_per_mask": None,
            "clicks_per_mask": None,
            "masks_per_image": None,
            "prefilled": 0,
        },
        {
            "date": dt.date(2026, 3, 10),
            "masks": 3,
            "seconds_per_mask": pytest.approx((30 + 60 + 40) / 3),
            "clicks_per_mask": pytest.approx((3 + 5) / 2),
            "masks_per_image": pytest.approx(3 / 2),
            "prefilled": 0,
        },
    ]
    bob, carol = rows["bob"], rows["carol"]
    assert stats["per_annotator"] == [
        {
            "user_id": bob.pk,
            "username": "bob",
            "masks": 3,
            "seconds_per_mask": pytest.approx(20),
            "clicks_per_mask": pytest.approx(3),
            "masks_reviewed": 1,
            "masks_rejected": 0,
            "rejection_rate": 0.0,
            "images_skipped": 0,
        },
        {
            "user_id": carol.pk,
            "username": "carol",
            "masks": 2,
            "seconds_per_mask": pytest.approx(50),
            "clicks_per_mask": pytest.approx(5),
            "masks_reviewed": 1,
            "masks_rejected": 1,
            "rejection_rate": 1.0,
            "images_skipped": 0,
        },
    ]


def test_a_longer_window_takes_in_older_masks(project, rows):
    totals = project_stats(project=project, days=4, now=NOW)["totals"]
    assert totals["masks"] == 6
    assert totals["seconds_per_mask"] == pytest.approx((10 + 20 + 30 + 60 + 40 + 1000) / 6)
    assert len(project_stats(project=project, days=30, now=NOW)["per_day"]) == 30


def test_annotator_stats_cover_only_that_annotators_masks(project, rows):
    stats = annotator_stats(project=project, user_id=rows["carol"].pk, days=3, now=NOW)
    assert "per_annotator" not in stats
    assert stats["totals"]["masks"] == 2
    assert stats["totals"]["seconds_per_mask"] == pytest.approx(50)
    assert stats["totals"]["clicks_per_mask"] == pytest.approx(5)
    assert stats["totals"]["masks_per_image"] == pytest.approx(1)
    assert stats["totals"]["images_total"] == 4
    assert [(d["date"], d["masks"]) for d in stats["per_day"]] == [
        (dt.date(2026, 3, 8), 0),
        (dt.date(2026, 3, 9), 0),
        (dt.date(2026, 3, 10), 2),
    ]


def test_stats_are_computed_in_a_fixed_number_of_queries(
    project, rows, django_assert_max_num_queries
):
    # Images, masks, masks per day, per annotator, skips per annotator, prefilled masks per day,
    # the project's categories (and, in a project with some, masks per category).
    with django_assert_max_num_queries(7):
        project_stats(project=project, days=30, now=NOW)
    category_create(project=project, name="car")
    with django_assert_max_num_queries(8):
        project_stats(project=project, days=30, now=NOW)


def test_the_stats_api_answers_the_documented_shape(project, admin_user, annotator_user):
    (image,) = make_images(project, 1)
    _made(image, annotator_user, timezone.now(), seconds=12.5, clicks=3)
    response = client_for(admin_user).get(f"/api/projects/{project.pk}/stats/?days=7")
    assert response.status_code == 200
    assert response.data["totals"]["masks"] == 1
    assert response.data["totals"]["seconds_per_mask"] == 12.5
    assert len(response.data["per_day"]) == 7
    assert response.data["per_day"][-1]["date"] == timezone.localdate().isoformat()
    assert response.data["per_day"][-1]["masks"] == 1
    assert response.data["per_annotator"][0]["username"] == "bob"


def test_annotators_read_only_their_own_stats(project, annotator_user):
    carol = member(project, "carol", "annotator")
    client = client_for(annotator_user)
    own = client.get(f"/api/projects/{project.pk}/annotators/{annotator_user.pk}/stats/")
    assert own.status_code == 200
    assert "per_annotator" not in own.data
    other = client.get(f"/api/projects/{project.pk}/annotators/{carol.pk}/stats/")
    assert other.status_code == 403
    assert other.data["code"] == "permission_denied"
    assert client.get(f"/api/projects/{project.pk}/stats/").status_code == 403


def test_reviewers_read_anyones_stats_and_outsiders_get_404(project, annotator_user, outsider_user):
    reviewer = member(project, "rita", "reviewer")
    url = f"/api/projects/{project.pk}/annotators/{annotator_user.pk}/stats/"
    assert client_for(reviewer).get(url).status_code == 200
    assert client_for(reviewer).get(f"/api/projects/{project.pk}/stats/").status_code == 200
    assert client_for(outsider_user).get(url).status_code == 404
    stranger = f"/api/projects/{project.pk}/annotators/{outsider_user.pk}/stats/"
    assert client_for(reviewer).get(stranger).status_code == 404


@pytest.mark.parametrize("days", ["0", "367", "week"])
def test_a_bad_window_is_400(project, admin_user, days):
    response = client_for(admin_user).get(f"/api/projects/{project.pk}/stats/?days={days}")
    assert response.status_code == 400
    assert "days" in response.data["detail"]


def test_the_project_api_reports_progress_and_the_deployed_version(
    project, admin_user, annotator_user
):
    images = make_images(project, 3)
    Image.objects.filter(pk=images[0].pk).update(status="done")
    _made(images[0], annotator_user, timezone.now(), seconds=1, clicks=1)
    _made(images[1], annotator_user, timezone.now() - 2 * DAY, seconds=1, clicks=1)
    _made(images[1], admin_user, timezone.now(), seconds=1, clicks=1, status="rejected")
    version = ModelVersion.objects.create(
        project=project, name="base", arch="vit_b", checkpoint_key="k", sha256="f" * 64
    )
    project.deployed_version = version
    project.save()
    listed = client_for(annotator_user).get("/api/projects/").data["results"][0]
    detail = client_for(annotator_user).get(f"/api/projects/{project.pk}/").data
    for body in (listed, detail):
        assert body["images_total"] == 3
        assert body["images_done"] == 1
        assert body["masks_accepted"] == 2
        assert body["my_masks_today"] == 1
        assert body["deployed_version"] == {"id": version.pk, "name": "base", "arch": "vit_b"}


def test_the_per_annotator_table_downloads_as_csv(project, annotator_user):
    (image,) = make_images(project, 1)
    carol = member(project, "carol", "annotator")
    now = timezone.now()
    _made(image, annotator_user, now, seconds=10, clicks=2)
    _made(image, carol, now, seconds=40, clicks=4, status="rejected")
    _made(image, carol, now, seconds=60, clicks=None)
    reviewer = member(project, "rita", "reviewer")
    client = Client()
    client.force_login(reviewer)
    answer = client.get(f"/projects/{project.pk}/stats/annotators.csv?days=7")
    assert answer.status_code == 200
    assert answer["Content-Type"] == "text/csv; charset=utf-8"
    assert "-annotators-7d.csv" in answer["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(answer.content.decode())))
    assert [row["username"] for row in table] == ["carol", "bob"]  # most masks first
    assert table[0] == {
        "user_id": str(carol.pk),
        "username": "carol",
        "masks": "2",
        "seconds_per_mask": "50.0",
        "clicks_per_mask": "4.0",
        "masks_reviewed": "1",
        "masks_rejected": "1",
        "rejection_rate": "1.0",
        "images_skipped": "0",
    }
    assert (table[1]["masks_reviewed"], table[1]["rejection_rate"]) == ("0", "")  # no review yet
    # Reviewers and admins only, as the stats page.
    annotator = Client()
    annotator.force_login(annotator_user)
    assert annotator.get(f"/projects/{project.pk}/stats/annotators.csv").status_code == 403
