"""Skip and reopen over the REST API and on the project page: roles, bad input, the image
list's status filter, the grid's skipped badge and its "Reopen selected" button."""

import pytest
from django.test import Client

from annotation.models import Image, ImageLease
from annotation.services.leases import image_lease_take, image_mark_done, image_skip
from annotation.services.projects import project_create
from tests.annotation.workflow import make_images, member
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def _skip(user, image: Image, body: object):
    return client_for(user).post(f"/api/images/{image.pk}/skip/", body, format="json")


def _reopen(user, project, ids: object):
    return client_for(user).post(
        f"/api/projects/{project.pk}/images/reopen/", {"image_ids": ids}, format="json"
    )


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_annotator_skips_an_image_with_a_reason(project, annotator_user):
    (image,) = make_images(project, 1)
    answer = _skip(annotator_user, image, {"reason": "Blurry, too dark or unreadable"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "skipped"
    assert body["skip_reason"] == "Blurry, too dark or unreadable"
    assert body["skipped_by"] == annotator_user.pk
    assert body["skipped_at"]
    got = client_for(annotator_user).get(f"/api/images/{image.pk}/").json()
    assert (got["status"], got["skip_reason"]) == ("skipped", "Blurry, too dark or unreadable")


@pytest.mark.parametrize(
    "body",
    [{}, {"reason": ""}, {"reason": "   "}, {"reason": None}, {"reason": "x" * 501}, []],
)
def test_a_skip_without_a_usable_reason_is_400_and_changes_nothing(project, annotator_user, body):
    (image,) = make_images(project, 1)
    answer = _skip(annotator_user, image, body)
    assert answer.status_code == 400, answer.content
    image.refresh_from_db()
    assert (image.status, image.skip_reason) == ("todo", "")


def test_skip_refusals_name_their_reason(project, admin_user, annotator_user, outsider_user):
    done, held = make_images(project, 2)
    image_mark_done(image=done, user=annotator_user)
    answer = _skip(annotator_user, done, {"reason": "out of scope"})
    assert answer.status_code == 409
    assert "reviewer" in answer.json()["detail"]
    reviewer = member(project, "rita", "reviewer")
    assert _skip(reviewer, done, {"reason": "out of scope"}).status_code == 200
    image_lease_take(image=held, user=member(project, "dora", "annotator"))
    answer = _skip(annotator_user, held, {"reason": "duplicate"})
    assert (answer.status_code, answer.json()["code"]) == (409, "lease_taken")
    assert ImageLease.objects.filter(image=held).exists()
    # Not a member: the image does not exist for them.
    assert _skip(outsider_user, held, {"reason": "duplicate"}).status_code == 404
    held.refresh_from_db()
    assert held.status == "todo"


def test_reviewers_reopen_images_annotators_may_not(project, annotator_user):
    done, skipped, todo = make_images(project, 3)
    image_mark_done(image=done, user=annotator_user)
    image_skip(image=skipped, user=annotator_user, reason="blurry")
    ids = [done.pk, skipped.pk, todo.pk]
    assert _reopen(annotator_user, project, ids).status_code == 403
    assert Image.objects.filter(status="todo").count() == 1
    reviewer = member(project, "rita", "reviewer")
    answer = _reopen(reviewer, project, ids)
    assert (answer.status_code, answer.json()) == (200, {"reopened": 2})
    assert Image.objects.filter(status="todo").count() == 3


def test_reopen_refuses_bad_lists_and_foreign_ids(project, admin_user, annotator_user):
    (image,) = make_images(project, 1)
    image_mark_done(image=image, user=annotator_user)
    other = project_create(name="elsewhere", creator=admin_user)
    (theirs,) = make_images(other, 1)
    for ids in ([], ["a"], [0], "1", list(range(1, 10_002))):
        assert _reopen(admin_user, project, ids).status_code == 400, ids
    answer = _reopen(admin_user, project, [image.pk, theirs.pk])
    assert answer.status_code == 404
    assert str(theirs.pk) in answer.json()["detail"]
    image.refresh_from_db()
    assert image.status == "done"


def test_the_image_list_filters_by_status(project, annotator_user):
    todo, done, skipped = make_images(project, 3)
    image_mark_done(image=done, user=annotator_user)
    image_skip(image=skipped, user=annotator_user, reason="blurry")
    client = client_for(annotator_user)
    url = f"/api/projects/{project.pk}/images/"
    for status, expected in (("todo", todo), ("done", done), ("skipped", skipped)):
        rows = client.get(url, {"status": status}).json()["results"]
        assert [row["id"] for row in rows] == [expected.pk], status
    assert len(client.get(url).json()["results"]) == 3
    assert client.get(url, {"status": "finished"}).status_code == 400


def test_the_grid_shows_skipped_images_with_their_reason(project, annotator_user):
    todo, skipped = make_images(project, 2)
    image_skip(image=skipped, user=annotator_user, reason="Duplicate of another image")
    html = logged_in(annotator_user).get(f"/projects/{project.pk}/?status=skipped").content.decode()
    assert f'data-image="{skipped.pk}" data-status="skipped"' in html
    assert f'data-image="{todo.pk}"' not in html
    assert f"skipped by {annotator_user.username}: Duplicate of another image" in html
    assert '<span data-state-count="skipped">1</span>' in html
    # Annotators have no selection: no boxes, no reopen or remove button.
    assert "image-selection-form" not in html


def test_reviewers_reopen_from_the_grid_without_the_remove_button(project, annotator_user):
    done, skipped = make_images(project, 2)
    image_mark_done(image=done, user=annotator_user)
    image_skip(image=skipped, user=annotator_user, reason="blurry")
    reviewer = member(project, "rita", "reviewer")
    client = logged_in(reviewer)
    html = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'form="image-selection-form"' in html
    assert "data-reopen-images" in html
    assert "data-remove-images" not in html
    answer = client.post(
        f"/projects/{project.pk}/images/reopen/",
        {"image_ids": [str(done.pk), str(skipped.pk)], "back": "?status=skipped"},
        follow=True,
    )
    assert answer.redirect_chain[-1][0] == f"/projects/{project.pk}/?status=skipped#images"
    assert "Reopened 2 images" in answer.content.decode()
    assert Image.objects.filter(status="todo").count() == 2
    answer = client.post(f"/projects/{project.pk}/images/reopen/", {}, follow=True)
    assert "Select the images to reopen first" in answer.content.decode()
    answer = logged_in(annotator_user).post(
        f"/projects/{project.pk}/images/reopen/", {"image_ids": [str(done.pk)]}
    )
    assert answer.status_code == 403


def test_projects_count_their_skipped_images_apart_from_done_ones(project, annotator_user):
    done, skipped, _ = make_images(project, 3)
    image_mark_done(image=done, user=annotator_user)
    image_skip(image=skipped, user=annotator_user, reason="blurry")
    body = client_for(annotator_user).get(f"/api/projects/{project.pk}/").json()
    assert (body["images_total"], body["images_done"], body["images_skipped"]) == (3, 1, 1)
    client = logged_in(annotator_user)
    assert 'data-count="skipped">(1 skipped)' in client.get("/").content.decode()
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'data-count="skipped">1 skipped</a>' in page


def test_the_review_queue_leaves_skipped_images_out(project, annotator_user):
    from annotation.models import Mask
    from annotation.selectors.review import review_pending_masks, review_queue
    from annotation.services.masks import mask_create
    from tests.annotation.workflow import rle_of, square

    kept, skipped = make_images(project, 2)
    for image in (kept, skipped):
        mask_create(
            image=image, rle=rle_of(square()), source=Mask.Source.MANUAL, annotator=annotator_user
        )
    image_skip(image=skipped, user=annotator_user, reason="blurry")
    assert [image.pk for image in review_queue(project=project)] == [kept.pk]
    assert review_pending_masks(project=project).count() == 1


def test_stats_count_each_annotators_skips_and_the_projects(project, admin_user, annotator_user):
    from annotation.models import Mask
    from annotation.services.masks import mask_create
    from tests.annotation.workflow import rle_of, square

    worked, skipped_by_bob, skipped_by_dora, _ = make_images(project, 4)
    mask_create(
        image=worked, rle=rle_of(square()), source=Mask.Source.MANUAL, annotator=annotator_user
    )
    dora = member(project, "dora", "annotator")
    image_skip(image=skipped_by_bob, user=annotator_user, reason="blurry")
    image_skip(image=skipped_by_dora, user=dora, reason="duplicate")
    body = client_for(admin_user).get(f"/api/projects/{project.pk}/stats/").json()
    assert body["totals"]["images_skipped"] == 2
    rows = {row["username"]: row for row in body["per_annotator"]}
    assert (
        rows[annotator_user.username]["masks"],
        rows[annotator_user.username]["images_skipped"],
    ) == (1, 1)
    # Dora made no mask, yet her skips are counted on a row of her own.
    assert (
        rows["dora"]["masks"],
        rows["dora"]["images_skipped"],
        rows["dora"]["seconds_per_mask"],
    ) == (0, 1, None)
    assert [row["username"] for row in body["per_annotator"]] == [annotator_user.username, "dora"]
    # An annotator's own row on the project page counts only their own skips.
    page = logged_in(dora).get(f"/projects/{project.pk}/").content.decode()
    assert '<td class="num" data-cell="images_skipped">1</td>' in page
