"""Next image with a lease, renew/take, release, done: over the API and under concurrency."""

import datetime as dt
from functools import partial

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone

from annotation.models import Image, ImageLease, Project
from annotation.services.leases import image_lease_take, image_next_for_user
from annotation.services.projects import project_create
from tests.annotation.workflow import make_images, member, run_together
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def _next(user: User, project: Project, skip: list[int] | None = None):
    body = {} if skip is None else {"skip": skip}
    return client_for(user).post(f"/api/projects/{project.pk}/next-image/", body, format="json")


def _expire(image: Image, user: User) -> None:
    ImageLease.objects.filter(image=image, user=user).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )


def test_next_image_leases_the_lowest_id_todo_image(project, annotator_user):
    images = make_images(project, 3)
    response = _next(annotator_user, project)
    assert response.status_code == 200
    body = response.data
    assert body["image"]["id"] == images[0].pk
    assert body["image"]["status"] == "todo"
    assert body["image"]["masks"] == []
    assert body["image"]["content_url"] == f"/api/images/{images[0].pk}/content/"
    assert (body["image"]["width"], body["image"]["height"]) == (40, 30)
    assert body["lease"]["seconds"] == 600
    lease = ImageLease.objects.get()
    assert (lease.image_id, lease.user_id) == (images[0].pk, annotator_user.pk)
    left = (lease.expires_at - timezone.now()).total_seconds()
    assert 590 < left <= 600


@override_settings(MASKLOOP_LEASE_SECONDS=30)
def test_the_lease_lasts_maskloop_lease_seconds(project, annotator_user):
    make_images(project, 1)
    assert _next(annotator_user, project).data["lease"]["seconds"] == 30


def test_next_image_resumes_the_callers_own_lease_and_renews_it(project, annotator_user):
    images = make_images(project, 3)
    first = _next(annotator_user, project).data["image"]["id"]
    ImageLease.objects.update(expires_at=timezone.now() + dt.timedelta(seconds=5))
    again = _next(annotator_user, project)
    assert again.data["image"]["id"] == first == images[0].pk
    assert again.data["lease"]["seconds"] == 600
    assert ImageLease.objects.count() == 1


def test_two_annotators_get_different_images(project, annotator_user):
    images = make_images(project, 2)
    carol = member(project, "carol", "annotator")
    assert _next(annotator_user, project).data["image"]["id"] == images[0].pk
    assert _next(carol, project).data["image"]["id"] == images[1].pk


def test_an_expired_lease_nobody_renewed_is_handed_to_the_next_caller(project, annotator_user):
    images = make_images(project, 2)
    carol = member(project, "carol", "annotator")
    _next(annotator_user, project)
    _expire(images[0], annotator_user)
    response = _next(carol, project)
    assert response.data["image"]["id"] == images[0].pk
    holder = ImageLease.objects.get(image=images[0], expires_at__gt=timezone.now())
    assert holder.user == carol


def test_done_images_are_skipped_and_204_when_nothing_needs_work(project, annotator_user):
    images = make_images(project, 2)
    Image.objects.filter(pk=images[0].pk).update(status="done")
    assert _next(annotator_user, project).data["image"]["id"] == images[1].pk
    carol = member(project, "carol", "annotator")
    response = _next(carol, project)  # the only todo image is bob's
    assert response.status_code == 204
    assert not ImageLease.objects.filter(user=carol).exists()


def test_skip_passes_over_images_and_releases_the_callers_lease_on_them(project, annotator_user):
    images = make_images(project, 3)
    _next(annotator_user, project)
    response = _next(annotator_user, project, skip=[images[0].pk])
    assert response.data["image"]["id"] == images[1].pk
    assert list(ImageLease.objects.values_list("image_id", flat=True)) == [images[1].pk]


def test_a_bad_skip_list_is_400_and_leases_nothing(project, annotator_user):
    make_images(project, 1)
    response = _next(annotator_user, project, skip=["x"])  # type: ignore[list-item]
    assert response.status_code == 400
    assert response.data["code"] == "invalid"
    assert not ImageLease.objects.exists()


def test_taking_an_image_another_annotator_holds_is_409_lease_taken(project, annotator_user):
    (image,) = make_images(project, 1)
    carol = member(project, "carol", "annotator")
    _next(annotator_user, project)
    before = ImageLease.objects.get().expires_at
    response = client_for(carol).post(f"/api/images/{image.pk}/lease/")
    assert response.status_code == 409
    assert response.data["code"] == "lease_taken"
    assert "bob" in response.data["detail"]
    assert list(ImageLease.objects.values_list("user_id", "expires_at")) == [
        (annotator_user.pk, before)
    ]


def test_renewing_an_own_lease_and_taking_an_expired_one(project, annotator_user):
    (image,) = make_images(project, 1)
    carol = member(project, "carol", "annotator")
    renewed = client_for(annotator_user).post(f"/api/images/{image.pk}/lease/")
    assert renewed.status_code == 200
    assert renewed.data["seconds"] == 600
    _expire(image, annotator_user)
    taken = client_for(carol).post(f"/api/images/{image.pk}/lease/")
    assert taken.status_code == 200
    assert ImageLease.objects.get(expires_at__gt=timezone.now()).user == carol


def test_release_drops_only_the_callers_lease(project, annotator_user):
    first, second = make_images(project, 2)
    carol = member(project, "carol", "annotator")
    _next(annotator_user, project)
    _next(carol, project)
    response = client_for(carol).delete(f"/api/images/{first.pk}/lease/")
    assert response.status_code == 204
    assert ImageLease.objects.filter(user=annotator_user, image=first).exists()
    assert client_for(carol).delete(f"/api/images/{second.pk}/lease/").status_code == 204
    assert not ImageLease.objects.filter(user=carol).exists()


def test_done_sets_the_status_and_releases_the_lease(project, annotator_user):
    first, second = make_images(project, 2)
    _next(annotator_user, project)
    response = client_for(annotator_user).post(f"/api/images/{first.pk}/done/")
    assert response.status_code == 200
    assert response.data["status"] == "done"
    first.refresh_from_db()
    assert first.status == "done"
    assert not ImageLease.objects.exists()
    assert _next(annotator_user, project).data["image"]["id"] == second.pk


def test_done_on_an_image_another_annotator_holds_is_409(project, annotator_user):
    (image,) = make_images(project, 1)
    carol = member(project, "carol", "annotator")
    _next(annotator_user, project)
    response = client_for(carol).post(f"/api/images/{image.pk}/done/")
    assert response.status_code == 409
    assert response.data["code"] == "lease_taken"
    image.refresh_from_db()
    assert image.status == "todo"


def test_images_of_another_project_answer_404_and_change_nothing(
    project, admin_user, annotator_user
):
    dogs = project_create(name="dogs", creator=admin_user)
    (image,) = make_images(dogs, 1)
    client = client_for(annotator_user)
    assert _next(annotator_user, dogs).status_code == 404
    assert client.post(f"/api/images/{image.pk}/lease/").status_code == 404
    assert client.delete(f"/api/images/{image.pk}/lease/").status_code == 404
    response = client.post(f"/api/images/{image.pk}/done/")
    assert response.status_code == 404
    assert response.data["code"] == "not_found"
    image.refresh_from_db()
    assert image.status == "todo"
    assert not ImageLease.objects.exists()


def test_skipping_an_image_of_another_project_hands_out_only_this_projects(
    project, admin_user, annotator_user
):
    dogs = project_create(name="dogs", creator=admin_user)
    (other,) = make_images(dogs, 1)
    (own,) = make_images(project, 1)
    response = _next(annotator_user, project, skip=[other.pk])
    assert response.data["image"]["id"] == own.pk


def test_a_candidate_held_by_another_user_is_passed_over(project, annotator_user):
    """The service re-reads the holder after locking: a lease it did not see is respected."""
    first, second = make_images(project, 2)
    carol = member(project, "carol", "annotator")
    image_lease_take(image=first, user=carol)
    lease = image_next_for_user(project=project, user=annotator_user)
    assert lease is not None
    assert lease.image.pk == second.pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_next_image_calls_never_hand_out_the_same_image():
    admin = User.objects.create_user("alice")
    project = project_create(name="race", creator=admin)
    make_images(project, 30)
    users = [member(project, f"annotator{n}", "annotator") for n in range(10)]
    for _ in range(3):
        leases = run_together(
            [partial(image_next_for_user, project=project, user=user) for user in users]
        )
        handed = [lease.image.pk for lease in leases if lease is not None]
        assert len(handed) == len(users)
        assert len(set(handed)) == len(handed)
        # Everyone finishes their image: the next round competes for new ones.
        Image.objects.filter(pk__in=handed).update(status="done")
        ImageLease.objects.all().delete()
    held = ImageLease.objects.count()
    assert held == 0
    assert Image.objects.filter(project=project, status="done").count() == 30


@pytest.mark.django_db(transaction=True)
def test_concurrent_takes_of_one_free_image_leave_exactly_one_holder():
    admin = User.objects.create_user("alice")
    project = project_create(name="race", creator=admin)
    (image,) = make_images(project, 1)
    users = [member(project, f"annotator{n}", "annotator") for n in range(8)]

    def take(user: User) -> str:
        response = client_for(user).post(f"/api/images/{image.pk}/lease/")
        return str(response.data.get("code", response.status_code))

    outcomes = run_together([partial(take, user) for user in users])
    assert sorted(outcomes) == ["200"] + ["lease_taken"] * 7
    assert ImageLease.objects.filter(expires_at__gt=timezone.now()).count() == 1


def test_lease_taken_names_the_holder_and_a_readable_time(project, annotator_user):
    """The 409 body keeps ``expires_at`` machine-readable and adds ``holder``, so the tool can
    say the time in the browser's own locale; the detail is readable as it is (no microseconds,
    UTC named)."""
    (image,) = make_images(project, 1)
    carol = member(project, "carol", "annotator")
    lease = image_lease_take(image=image, user=annotator_user)
    response = client_for(carol).post(f"/api/images/{image.pk}/lease/")
    assert response.status_code == 409
    assert response.data["holder"] == "bob"
    assert dt.datetime.fromisoformat(response.data["expires_at"]) == lease.expires_at
    until = lease.expires_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    detail = f"image #{image.pk} is being annotated by bob until {until} UTC"
    assert response.data["detail"] == detail
