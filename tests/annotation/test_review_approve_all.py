"""Approving an image's masks at once (POST /api/images/{id}/review/approve/) and taking
verdicts back (POST /api/images/{id}/review/undo/): the listed masks only, those no longer
accepted (or another reviewer's) left alone, roles, and refusals that change nothing."""

import pytest
from django.contrib.auth.models import User

from annotation.models import Image, Mask
from annotation.selectors.review import review_pending_masks
from annotation.services.masks import mask_create
from annotation.services.review import image_masks_approve, mask_fix, mask_reject
from tests.annotation.workflow import make_images, member, rle_of, square
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def _masks(image: Image, user: User, count: int) -> list[Mask]:
    return [
        mask_create(image=image, rle=rle_of(square(x0=10 + n)), source="assisted", annotator=user)
        for n in range(count)
    ]


def _approve(user: User, image: Image, body: object):
    return client_for(user).post(f"/api/images/{image.pk}/review/approve/", body, format="json")


def test_a_reviewer_approves_the_listed_masks_of_an_image(project, annotator_user):
    first, second = make_images(project, 2)
    a, b, late = _masks(first, annotator_user, 3)
    (other,) = _masks(second, annotator_user, 1)
    reviewer = member(project, "rita", "reviewer")
    answer = _approve(reviewer, first, {"mask_ids": [a.pk, b.pk, a.pk]})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert [mask["id"] for mask in body["approved"]] == [a.pk, b.pk]
    assert all(mask["reviewed_by"] == reviewer.pk for mask in body["approved"])
    assert body["unchanged"] == []
    # Only what the reviewer named: a mask accepted after the page loaded stays pending.
    assert set(review_pending_masks(project=project)) == {late, other}
    for mask in (a, b):
        mask.refresh_from_db()
        assert (mask.status, mask.reviewed_by_id) == ("accepted", reviewer.pk)
        assert mask.reviewed_at is not None


def test_masks_no_longer_accepted_are_left_as_they_are(project, annotator_user):
    (image,) = make_images(project, 1)
    a, b = _masks(image, annotator_user, 2)
    co_reviewer = member(project, "carl", "reviewer")
    mask_reject(mask=b, reviewer=co_reviewer, reason="two objects in one")
    approved, unchanged = image_masks_approve(
        image=image, reviewer=member(project, "rita", "reviewer"), mask_ids=[a.pk, b.pk]
    )
    assert [mask.pk for mask in approved] == [a.pk]
    assert [(mask.pk, mask.status) for mask in unchanged] == [(b.pk, "rejected")]
    b.refresh_from_db()
    assert (b.status, b.rejection_reason, b.reviewed_by_id) == (
        "rejected",
        "two objects in one",
        co_reviewer.pk,
    )


def test_annotators_may_not_and_outsiders_see_nothing(project, annotator_user, outsider_user):
    (image,) = make_images(project, 1)
    (mask,) = _masks(image, annotator_user, 1)
    assert _approve(annotator_user, image, {"mask_ids": [mask.pk]}).status_code == 403
    assert _approve(outsider_user, image, {"mask_ids": [mask.pk]}).status_code == 404
    mask.refresh_from_db()
    assert mask.reviewed_at is None


@pytest.mark.parametrize(
    "body",
    [{}, {"mask_ids": []}, {"mask_ids": "1"}, {"mask_ids": [0]}, {"mask_ids": [True]}, []],
)
def test_malformed_lists_are_400(project, annotator_user, body):
    (image,) = make_images(project, 1)
    (mask,) = _masks(image, annotator_user, 1)
    answer = _approve(member(project, "rita", "reviewer"), image, body)
    assert answer.status_code == 400, answer.content
    mask.refresh_from_db()
    assert mask.reviewed_at is None


def test_ids_of_another_image_are_400_and_nothing_is_approved(project, annotator_user):
    first, second = make_images(project, 2)
    (mine,) = _masks(first, annotator_user, 1)
    (theirs,) = _masks(second, annotator_user, 1)
    answer = _approve(
        member(project, "rita", "reviewer"), first, {"mask_ids": [mine.pk, theirs.pk]}
    )
    assert answer.status_code == 400
    body = answer.json()
    assert (body["code"], body["missing"]) == ("invalid_review", [theirs.pk])
    assert "nothing was approved" in body["detail"]
    assert set(review_pending_masks(project=project)) == {mine, theirs}


def test_at_most_a_thousand_ids(project, annotator_user):
    (image,) = make_images(project, 1)
    answer = _approve(
        member(project, "rita", "reviewer"), image, {"mask_ids": list(range(1, 1002))}
    )
    assert answer.status_code == 400


def _undo(user: User, image: Image, body: object):
    return client_for(user).post(f"/api/images/{image.pk}/review/undo/", body, format="json")


def test_a_reviewer_takes_back_their_verdicts(project, annotator_user):
    (image,) = make_images(project, 1)
    approved, rejected, fixed = _masks(image, annotator_user, 3)
    reviewer = member(project, "rita", "reviewer")
    image_masks_approve(image=image, reviewer=reviewer, mask_ids=[approved.pk])
    mask_reject(mask=rejected, reviewer=reviewer, reason="leaks")
    grown = square(x0=2)
    mask_fix(mask=fixed, reviewer=reviewer, rle=rle_of(grown))
    assert not review_pending_masks(project=project).exists()
    answer = _undo(reviewer, image, {"mask_ids": [approved.pk, rejected.pk, fixed.pk]})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert [mask["id"] for mask in body["returned"]] == [approved.pk, rejected.pk, fixed.pk]
    assert body["unchanged"] == []
    assert set(review_pending_masks(project=project)) == {approved, rejected, fixed}
    rejected.refresh_from_db()
    assert (rejected.status, rejected.rejection_reason, rejected.reviewed_by_id) == (
        "accepted",
        "",
        None,
    )
    fixed.refresh_from_db()
    assert fixed.area == int(grown.sum())  # the fix's pixels stay; only the verdict goes


def test_undo_leaves_other_reviewers_verdicts_and_undecided_masks_alone(project, annotator_user):
    (image,) = make_images(project, 1)
    theirs, pending = _masks(image, annotator_user, 2)
    mask_reject(mask=theirs, reviewer=member(project, "carl", "reviewer"), reason="leaks")
    answer = _undo(
        member(project, "rita", "reviewer"), image, {"mask_ids": [theirs.pk, pending.pk]}
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "returned": [],
        "unchanged": [
            {"id": theirs.pk, "status": "rejected"},
            {"id": pending.pk, "status": "accepted"},
        ],
    }
    theirs.refresh_from_db()
    assert (theirs.status, theirs.rejection_reason) == ("rejected", "leaks")


def test_undo_refusals_change_nothing(project, annotator_user, outsider_user):
    first, second = make_images(project, 2)
    (mask,) = _masks(first, annotator_user, 1)
    (other,) = _masks(second, annotator_user, 1)
    reviewer = member(project, "rita", "reviewer")
    image_masks_approve(image=first, reviewer=reviewer, mask_ids=[mask.pk])
    assert _undo(annotator_user, first, {"mask_ids": [mask.pk]}).status_code == 403
    assert _undo(outsider_user, first, {"mask_ids": [mask.pk]}).status_code == 404
    answer = _undo(reviewer, first, {"mask_ids": [mask.pk, other.pk]})
    assert (answer.status_code, answer.json()["missing"]) == (400, [other.pk])
    assert "nothing was taken back" in answer.json()["detail"]
    assert _undo(reviewer, first, {"mask_ids": []}).status_code == 400
    mask.refresh_from_db()
    assert mask.reviewed_by_id == reviewer.pk
