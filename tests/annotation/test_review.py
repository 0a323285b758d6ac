"""Review: the queue, reject with a reason, approve, fix; roles; rejected masks leave exports."""

import numpy as np
import pytest
from django.contrib.auth.models import User

from annotation.models import Image, Mask, Project
from annotation.selectors.masks import export_counts, masks_for_export
from annotation.services.masks import mask_accept
from annotation.services.projects import project_create
from tests.annotation.workflow import decoded, make_images, member, rle_of, square
from tests.factories import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewer(project: Project) -> User:
    return member(project, "rita", "reviewer")


def _mask(image: Image, user: User, pixels: np.ndarray | None = None) -> Mask:
    rle = rle_of(square() if pixels is None else pixels)
    return mask_accept(image=image, annotator=user, rle=rle, source="assisted")[0]


def test_the_queue_lists_images_with_unreviewed_masks_with_all_their_accepted_masks(
    project, annotator_user, reviewer
):
    first, second, third = make_images(project, 3)
    a = _mask(first, annotator_user)
    b = _mask(first, annotator_user, square(0, 2))
    _mask(second, annotator_user)
    client_for(reviewer).post(f"/api/masks/{Mask.objects.get(image=second).pk}/approve/")
    rejected = _mask(third, annotator_user)
    client_for(reviewer).post(f"/api/masks/{rejected.pk}/reject/", {"reason": "sloppy"})
    client_for(reviewer).post(f"/api/masks/{a.pk}/approve/")
    response = client_for(reviewer).get(f"/api/projects/{project.pk}/review/")
    assert response.status_code == 200
    assert response.data["count"] == 1
    (item,) = response.data["results"]
    assert item["image"]["id"] == first.pk
    assert [(m["id"], m["reviewed_at"] is None) for m in item["masks"]] == [
        (a.pk, False),
        (b.pk, True),
    ]


def test_the_queue_is_paginated_in_image_order(project, annotator_user, reviewer):
    images = make_images(project, 3)
    for image in images:
        _mask(image, annotator_user)
    client = client_for(reviewer)
    page = client.get(f"/api/projects/{project.pk}/review/?limit=2")
    assert [item["image"]["id"] for item in page.data["results"]] == [i.pk for i in images[:2]]
    assert page.data["next"] is not None
    rest = client.get(page.data["next"])
    assert [item["image"]["id"] for item in rest.data["results"]] == [images[2].pk]
    assert rest.data["next"] is None


def test_the_queue_narrows_to_one_annotator(project, annotator_user, reviewer):
    first, second = make_images(project, 2)
    carol = member(project, "carol", "annotator")
    _mask(first, annotator_user)
    _mask(second, carol)
    response = client_for(reviewer).get(f"/api/projects/{project.pk}/review/?annotator={carol.pk}")
    assert [item["image"]["id"] for item in response.data["results"]] == [second.pk]


def test_reject_records_the_reason_and_reviewer_and_drops_the_mask_from_export(
    project, annotator_user, reviewer
):
    (image,) = make_images(project, 1)
    kept = _mask(image, annotator_user, square(0, 3))
    mask = _mask(image, annotator_user)
    assert export_counts(project=project) == (1, 2)
    response = client_for(reviewer).post(
        f"/api/masks/{mask.pk}/reject/", {"reason": "  leaks into the background  "}
    )
    assert response.status_code == 200
    assert response.data["status"] == "rejected"
    assert response.data["rejection_reason"] == "leaks into the background"
    assert response.data["reviewed_by"] == reviewer.pk
    mask.refresh_from_db()
    assert (mask.status, mask.reviewed_by) == ("rejected", reviewer)
    assert mask.reviewed_at is not None
    assert [row["id"] for row in masks_for_export(project=project)] == [kept.pk]
    assert export_counts(project=project) == (1, 1)
    assert [row["id"] for row in masks_for_export(project=project, status="rejected")] == [mask.pk]


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}])
def test_a_rejection_without_a_usable_reason_is_400_and_changes_nothing(
    project, annotator_user, reviewer, body
):
    (image,) = make_images(project, 1)
    mask = _mask(image, annotator_user)
    response = client_for(reviewer).post(f"/api/masks/{mask.pk}/reject/", body, format="json")
    assert response.status_code == 400
    assert response.data["code"] == "invalid"
    assert "reason" in response.data["detail"]
    mask.refresh_from_db()
    assert (mask.status, mask.reviewed_at, mask.rejection_reason) == ("accepted", None, "")


def test_the_image_mask_list_shows_accepted_masks_unless_asked_otherwise(
    project, annotator_user, reviewer
):
    (image,) = make_images(project, 1)
    kept = _mask(image, annotator_user, square(0, 3))
    rejected = _mask(image, annotator_user)
    client_for(reviewer).post(f"/api/masks/{rejected.pk}/reject/", {"reason": "duplicate"})
    url = f"/api/images/{image.pk}/masks/"
    client = client_for(annotator_user)
    assert [m["id"] for m in client.get(url).data["results"]] == [kept.pk]
    listed = client.get(url, {"status": "rejected"}).data["results"]
    assert [(m["id"], m["rejection_reason"]) for m in listed] == [(rejected.pk, "duplicate")]


def test_approve_marks_reviewed_and_takes_back_a_rejection(project, annotator_user, reviewer):
    (image,) = make_images(project, 1)
    mask = _mask(image, annotator_user)
    client = client_for(reviewer)
    client.post(f"/api/masks/{mask.pk}/reject/", {"reason": "wrong object"})
    response = client.post(f"/api/masks/{mask.pk}/approve/")
    assert response.status_code == 200
    mask.refresh_from_db()
    assert (mask.status, mask.rejection_reason, mask.reviewed_by) == ("accepted", "", reviewer)
    assert mask.reviewed_at is not None
    assert export_counts(project=project) == (1, 1)


def test_fix_replaces_the_pixels_and_marks_reviewed(project, annotator_user, reviewer):
    (image,) = make_images(project, 1)
    mask = _mask(image, annotator_user)
    fixed = square(2, 4, 3, 9)
    response = client_for(reviewer).post(
        f"/api/masks/{mask.pk}/fix/", {"rle": rle_of(fixed)}, format="json"
    )
    assert response.status_code == 200
    mask.refresh_from_db()
    assert np.array_equal(decoded(mask.rle_counts), fixed)
    assert (mask.area, mask.bbox) == (12, [3, 2, 6, 2])
    assert (mask.reviewed_by, mask.annotator) == (reviewer, annotator_user)
    assert response.data["area"] == 12


def test_a_malformed_fix_is_400_and_keeps_the_mask(project, annotator_user, reviewer):
    (image,) = make_images(project, 1)
    mask = _mask(image, annotator_user)
    before = mask.rle_counts
    response = client_for(reviewer).post(
        f"/api/masks/{mask.pk}/fix/", {"rle": {"size": [30, 40], "counts": "??"}}, format="json"
    )
    assert response.status_code == 400
    assert response.data["code"] == "invalid_mask"
    mask.refresh_from_db()
    assert (mask.rle_counts, mask.reviewed_at) == (before, None)


def test_annotators_get_403_on_every_review_endpoint(project, annotator_user):
    (image,) = make_images(project, 1)
    mask = _mask(image, annotator_user)
    client = client_for(annotator_user)
    calls = [
        client.get(f"/api/projects/{project.pk}/review/"),
        client.post(f"/api/masks/{mask.pk}/reject/", {"reason": "mine is bad"}),
        client.post(f"/api/masks/{mask.pk}/approve/"),
        client.post(f"/api/masks/{mask.pk}/fix/", {"rle": rle_of(square(0, 1))}, format="json"),
    ]
    assert [response.status_code for response in calls] == [403] * 4
    assert {response.data["code"] for response in calls} == {"permission_denied"}
    mask.refresh_from_db()
    assert (mask.status, mask.reviewed_at, mask.area) == ("accepted", None, 200)


def test_review_of_another_projects_mask_is_404(project, admin_user, annotator_user, reviewer):
    dogs = project_create(name="dogs", creator=admin_user)
    (image,) = make_images(dogs, 1)
    mask = _mask(image, admin_user)
    client = client_for(reviewer)
    assert client.get(f"/api/projects/{dogs.pk}/review/").status_code == 404
    assert client.post(f"/api/masks/{mask.pk}/reject/", {"reason": "no"}).status_code == 404
    mask.refresh_from_db()
    assert mask.status == "accepted"


def test_the_workflow_endpoints_are_in_the_schema(admin_user):
    response = client_for(admin_user).get(
        "/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    paths = response.json()["paths"]
    expected = {
        ("post", "/api/projects/{project_id}/next-image/"): "images_next",
        ("post", "/api/images/{image_id}/lease/"): "image_lease_take",
        ("delete", "/api/images/{image_id}/lease/"): "image_lease_release",
        ("post", "/api/images/{image_id}/done/"): "images_mark_done",
        ("post", "/api/images/{image_id}/masks/"): "masks_accept",
        ("delete", "/api/masks/{mask_id}/"): "masks_delete",
        ("get", "/api/projects/{project_id}/review/"): "review_queue",
        ("post", "/api/masks/{mask_id}/reject/"): "masks_reject",
        ("post", "/api/masks/{mask_id}/approve/"): "masks_approve",
        ("post", "/api/masks/{mask_id}/fix/"): "masks_fix",
        ("get", "/api/projects/{project_id}/stats/"): "project_stats",
        ("get", "/api/projects/{project_id}/annotators/{user_id}/stats/"): "annotator_stats",
    }
    for (method, path), operation_id in expected.items():
        assert paths[path][method]["operationId"] == operation_id
