"""Editing an accepted mask (PATCH /api/masks/{id}/): new pixels under the same id, the
edit's effort added to the mask's, the review cleared; who may edit, and refusals that change
nothing."""

import datetime as dt

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from annotation.models import Image, ImageLease, Mask
from annotation.selectors.masks import usable_masks
from annotation.selectors.review import review_pending_masks
from annotation.services.leases import image_lease_take, image_skip
from annotation.services.mask_edit import mask_edit
from annotation.services.masks import mask_accept, mask_create
from annotation.services.review import mask_approve, mask_reject
from tests.annotation.workflow import decoded, make_images, member, png_of, rle_of, square
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def _accepted(image: Image, user: User, pixels: np.ndarray | None = None) -> Mask:
    mask, _ = mask_accept(
        image=image,
        annotator=user,
        rle=rle_of(square() if pixels is None else pixels),
        source="assisted",
        clicks=2,
        brush_strokes=1,
        seconds_spent=10.0,
    )
    return mask


def _edit(user: User, mask: Mask, body: object):
    return client_for(user).patch(f"/api/masks/{mask.pk}/", body, format="json")


def _unchanged(mask: Mask) -> None:
    before = (mask.rle_counts, mask.area, mask.clicks, mask.seconds_spent, mask.edit_count)
    mask.refresh_from_db()
    assert (
        mask.rle_counts,
        mask.area,
        mask.clicks,
        mask.seconds_spent,
        mask.edit_count,
    ) == before


def test_an_annotator_edits_their_mask_in_place(project, annotator_user):
    (image,) = make_images(project, 1)
    mask = _accepted(image, annotator_user)
    mask_approve(mask=mask, reviewer=member(project, "rita", "reviewer"))
    grown = square(y0=5, y1=20, x0=5, x1=30)
    answer = _edit(
        annotator_user,
        mask,
        {"rle": rle_of(grown), "clicks": 1, "brush_strokes": 3, "seconds_spent": 4.5},
    )
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["id"] == mask.pk
    assert body["area"] == int(grown.sum()) == 375
    assert body["bbox"] == [5.0, 5.0, 25.0, 15.0]
    # The edit's effort adds to the accept's; the provenance stays the accept's.
    assert (body["clicks"], body["brush_strokes"], body["seconds_spent"]) == (3, 4, 14.5)
    assert (body["source"], body["annotator"], body["status"]) == (
        "assisted",
        annotator_user.pk,
        "accepted",
    )
    assert (body["edit_count"], body["edited_by"]) == (1, annotator_user.pk)
    assert body["edited_at"]
    # The reviewed mask changed: it needs review again.
    assert (body["reviewed_by"], body["reviewed_at"]) == (None, None)
    assert list(review_pending_masks(project=project)) == [Mask.objects.get(pk=mask.pk)]
    stored = Mask.objects.get(pk=mask.pk)
    assert np.array_equal(decoded(stored.rle_counts), grown)
    assert Mask.objects.count() == 1


def test_an_edit_takes_png_and_counts_default_to_zero(project, annotator_user):
    (image,) = make_images(project, 1)
    mask = _accepted(image, annotator_user)
    smaller = square(y0=5, y1=10, x0=10, x1=20)
    answer = _edit(annotator_user, mask, {"png": png_of(smaller, mode="L")})
    assert answer.status_code == 200, answer.content
    mask.refresh_from_db()
    assert np.array_equal(decoded(mask.rle_counts), smaller)
    assert (mask.clicks, mask.brush_strokes, mask.seconds_spent, mask.edit_count) == (2, 1, 10.0, 1)


def test_a_mask_stored_without_counts_counts_the_edit_from_zero(project, annotator_user):
    (image,) = make_images(project, 1)
    mask = mask_create(image=image, rle=rle_of(square()), source="imported")
    reviewer = member(project, "rita", "reviewer")
    edited = mask_edit(
        mask=mask, user=reviewer, rle=rle_of(square(x0=12)), clicks=2, seconds_spent=3.0
    )
    assert (edited.clicks, edited.brush_strokes, edited.seconds_spent) == (2, 0, 3.0)
    assert (edited.source, edited.annotator_id, edited.edited_by_id) == (
        "imported",
        None,
        reviewer.pk,
    )


def test_reviewers_and_admins_edit_any_mask_annotators_only_their_own(
    project, admin_user, annotator_user
):
    (image,) = make_images(project, 1)
    mask = _accepted(image, annotator_user)
    other = member(project, "dora", "annotator")
    answer = _edit(other, mask, {"rle": rle_of(square(x0=12))})
    assert answer.status_code == 403
    assert "annotator or a reviewer" in answer.json()["detail"]
    _unchanged(mask)
    reviewer = member(project, "rita", "reviewer")
    assert _edit(reviewer, mask, {"rle": rle_of(square(x0=12))}).status_code == 200
    assert _edit(admin_user, mask, {"rle": rle_of(square(x0=14))}).status_code == 200
    mask.refresh_from_db()
    assert (mask.edit_count, mask.edited_by_id, mask.annotator_id) == (
        2,
        admin_user.pk,
        annotator_user.pk,
    )


def test_outsiders_get_404(project, annotator_user, outsider_user):
    (image,) = make_images(project, 1)
    mask = _accepted(image, annotator_user)
    assert _edit(outsider_user, mask, {"rle": rle_of(square(x0=12))}).status_code == 404
    assert (
        client_for(annotator_user).patch("/api/masks/999999/", {}, format="json").status_code == 404
    )
    _unchanged(mask)


@pytest.mark.parametrize(
    "body",
    [
        {},  # neither rle nor png
        {"rle": rle_of(np.zeros((30, 40), dtype=bool))},  # empty
        {"rle": rle_of(np.ones((20, 40), dtype=bool))},  # another size
        {"rle": {"size": [30, 40], "counts": "not-rle-at-all"}},
        {"png": "bm90IGEgcG5n"},
        {"rle": rle_of(square()), "png": png_of(square())},
        {"rle": rle_of(square()), "clicks": -1},
        {"rle": rle_of(square()), "brush_strokes": 2**31},
        {"rle": rle_of(square()), "seconds_spent": 86401},
        {"rle": rle_of(square()), "seconds_spent": "NaN"},
        [],
    ],
)
def test_bad_edits_are_400_and_change_nothing(project, annotator_user, body):
    (image,) = make_images(project, 1)
    mask = _accepted(image, annotator_user)
    answer = _edit(annotator_user, mask, body)
    assert answer.status_code == 400, answer.content
    _unchanged(mask)


def test_prefilled_masks_not_accepted_and_masks_of_skipped_images_are_not_edited(
    project, annotator_user
):
    first, second = make_images(project, 2)
    proposed = mask_create(
        image=first, rle=rle_of(square()), source="prefill", status=Mask.Status.PROPOSED
    )
    rejected = mask_create(
        image=first, rle=rle_of(square()), source="prefill", status=Mask.Status.REJECTED
    )
    for prefilled in (proposed, rejected):  # the tool's R rejects and restores these
        answer = _edit(annotator_user, prefilled, {"rle": rle_of(square(x0=12))})
        assert (answer.status_code, answer.json()["code"]) == (409, "conflict")
        assert "prefilled" in answer.json()["detail"]
    on_skipped = _accepted(second, annotator_user)
    image_skip(image=second, user=annotator_user, reason="blurry")
    answer = _edit(annotator_user, on_skipped, {"rle": rle_of(square(x0=12))})
    assert answer.status_code == 409
    assert "reopen" in answer.json()["detail"]
    for mask in (proposed, rejected, on_skipped):
        _unchanged(mask)


def test_a_rejected_mask_is_fixed_and_resubmitted_by_its_annotator(project, annotator_user):
    (image,) = make_images(project, 1)
    mask = _accepted(image, annotator_user)
    reviewer = member(project, "rita", "reviewer")
    mask_reject(mask=mask, reviewer=reviewer, reason="misses the handle")
    assert not review_pending_masks(project=project).exists()
    answer = _edit(annotator_user, mask, {"rle": rle_of(square(x0=5)), "brush_strokes": 2})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["status"], body["reviewed_by"], body["edit_count"]) == ("accepted", None, 1)
    # The reason stays until the next review, so the reviewer sees what was wrong.
    assert body["rejection_reason"] == "misses the handle"
    assert list(review_pending_masks(project=project)) == [Mask.objects.get(pk=mask.pk)]
    mask_approve(mask=Mask.objects.get(pk=mask.pk), reviewer=reviewer)
    mask.refresh_from_db()
    assert (mask.status, mask.rejection_reason) == ("accepted", "")
    # Another annotator may not resubmit it.
    mask_reject(mask=mask, reviewer=reviewer, reason="still misses it")
    assert (
        _edit(member(project, "dora", "annotator"), mask, {"rle": rle_of(square())}).status_code
        == 403
    )


def test_an_edit_follows_the_lease_rule_of_an_accept(project, annotator_user):
    (image,) = make_images(project, 1)
    image_lease_take(image=image, user=annotator_user)
    mask = _accepted(image, annotator_user)
    # The annotator's lease ran out and another annotator holds the image now.
    ImageLease.objects.filter(user=annotator_user).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    image_lease_take(image=image, user=member(project, "dora", "annotator"))
    answer = _edit(annotator_user, mask, {"rle": rle_of(square(x0=12))})
    assert (answer.status_code, answer.json()["code"]) == (409, "lease_expired")
    _unchanged(mask)


def test_the_edited_pixels_are_what_exports_read(project, annotator_user):
    (image,) = make_images(project, 1)
    mask = _accepted(image, annotator_user)
    thin = square(y0=0, y1=30, x0=0, x1=2)
    mask_edit(mask=mask, user=annotator_user, rle=rle_of(thin))
    (exported,) = usable_masks(project=project, status=Mask.Status.ACCEPTED)
    assert exported.area == 60
    assert np.array_equal(decoded(exported.rle_counts), thin)


def test_the_schema_describes_the_edit_fields(admin_user):
    schema = client_for(admin_user).get("/api/schema/?format=json").json()
    body = schema["paths"]["/api/masks/{mask_id}/"]["patch"]["requestBody"]["content"]
    fields = schema["components"]["schemas"]["PatchedMaskEditInputRequest"]["properties"]
    assert body["application/json"]["schema"]["$ref"].endswith("/PatchedMaskEditInputRequest")
    assert {"rle", "png", "clicks", "brush_strokes", "seconds_spent"} <= set(fields)
    output = schema["components"]["schemas"]["MaskOutput"]["properties"]
    assert {"edit_count", "edited_by", "edited_at"} <= set(output)


def test_the_review_page_shows_an_edited_mask_back_in_the_queue(project, annotator_user):
    from django.test import Client

    (image,) = make_images(project, 1)
    mask = _accepted(image, annotator_user)
    reviewer = member(project, "rita", "reviewer")
    mask_approve(mask=mask, reviewer=reviewer)
    assert not review_pending_masks(project=project).exists()
    mask_edit(mask=mask, user=annotator_user, rle=rle_of(square(x0=12)), brush_strokes=1)
    client = Client()
    client.force_login(reviewer)
    page = client.get(f"/projects/{project.pk}/review/").content.decode()
    assert f"Mask #{mask.pk}" in page
    assert "edited 1\u00d7" in page
    assert "last edited by bob" in page
    # Each card opens its mask in the tool's editor too.
    assert f"/annotate/?image={image.pk}&amp;mask={mask.pk}" in page
