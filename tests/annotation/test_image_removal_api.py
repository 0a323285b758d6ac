"""Removing images over the API (``DELETE /api/images/{id}/``, ``POST /api/projects/{id}/images/
remove/``) and from the project page's tiles: admins only, bad input 400, foreign ids 404, a
running round 409, and none of those changes anything."""

import pytest
from django.test import Client

from annotation.models import Image, Mask
from engine.models import Job
from tests.annotation.test_export import add_image
from tests.annotation.test_image_removal import with_masks
from tests.factories import client_for

pytestmark = pytest.mark.django_db

BULK = "/api/projects/{}/images/remove/"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_admin_deletes_one_image(project, admin_client, django_capture_on_commit_callbacks):
    image = add_image(project, 40, 30, 1)
    with_masks(image, 2)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        answer = admin_client.delete(f"/api/images/{image.pk}/")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["images"], body["masks"]) == (1, 2)
    job = Job.objects.get(pk=body["job"])
    assert (job.kind, job.status) == ("remove_images", "queued")
    assert len(queued) == 1  # the purge task, sent once the transaction commits
    assert not Image.objects.exists()
    assert not Mask.objects.exists()
    assert admin_client.get(f"/api/images/{image.pk}/").status_code == 404


def test_an_admin_removes_many(project, admin_client):
    images = [add_image(project, 40, 30, seed) for seed in range(4)]
    ids = [image.pk for image in images[:3]]
    answer = admin_client.post(BULK.format(project.pk), {"image_ids": ids}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["images"] == 3
    assert list(Image.objects.values_list("pk", flat=True)) == [images[3].pk]


def test_annotators_and_outsiders_remove_nothing(project, annotator_client, outsider_user):
    image = add_image(project, 40, 30, 1)
    assert annotator_client.delete(f"/api/images/{image.pk}/").status_code == 403
    answer = annotator_client.post(
        BULK.format(project.pk), {"image_ids": [image.pk]}, format="json"
    )
    assert answer.status_code == 403
    outsider = client_for(outsider_user)
    assert outsider.delete(f"/api/images/{image.pk}/").status_code == 404
    answer = outsider.post(BULK.format(project.pk), {"image_ids": [image.pk]}, format="json")
    assert answer.status_code == 404
    assert Image.objects.count() == 1
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "body",
    [{}, {"image_ids": []}, {"image_ids": "1"}, {"image_ids": [0]}, {"image_ids": [2**63]}],
)
def test_malformed_requests_answer_400(project, admin_client, body):
    add_image(project, 40, 30, 1)
    answer = admin_client.post(BULK.format(project.pk), body, format="json")
    assert answer.status_code == 400, answer.content
    assert Image.objects.count() == 1
    assert not Job.objects.exists()


def test_ids_of_another_project_answer_404_listing_them(project, admin_client):
    from annotation.models import Project

    other = Project.objects.create(name="dogs")
    mine, theirs = add_image(project, 40, 30, 1), add_image(other, 40, 30, 2)
    answer = admin_client.post(
        BULK.format(project.pk), {"image_ids": [mine.pk, theirs.pk]}, format="json"
    )
    assert answer.status_code == 404
    assert str(theirs.pk) in answer.json()["detail"]
    assert Image.objects.count() == 2
    assert not Job.objects.exists()


def test_a_running_round_answers_409(project, admin_client):
    image = add_image(project, 40, 30, 1)
    round_job = Job.objects.create(project=project, kind="train", status="running")
    answer = admin_client.delete(f"/api/images/{image.pk}/")
    assert answer.status_code == 409
    assert f"#{round_job.pk}" in answer.json()["detail"]
    assert Image.objects.count() == 1
    assert Job.objects.count() == 1


# --- the project page ---------------------------------------------------------------------------


def test_admins_see_the_tile_boxes_and_the_remove_form(project, admin_user, annotator_user):
    add_image(project, 40, 30, 1)
    html = logged_in(admin_user).get(f"/projects/{project.pk}/").content.decode()
    assert 'form="image-selection-form"' in html
    assert "data-remove-images" in html
    html = logged_in(annotator_user).get(f"/projects/{project.pk}/").content.decode()
    assert "image-selection-form" not in html


def test_the_page_form_removes_the_ticked_images_once_confirmed(project, admin_user):
    images = [add_image(project, 40, 30, seed) for seed in range(3)]
    client = logged_in(admin_user)
    url = f"/projects/{project.pk}/images/remove/"
    ids = [str(images[0].pk), str(images[1].pk)]
    answer = client.post(url, {"image_ids": ids, "back": "?status=todo"})
    assert answer.status_code == 302
    assert answer["Location"].endswith("?status=todo#images")
    assert Image.objects.count() == 3  # not confirmed
    answer = client.post(url, {"image_ids": ids, "confirm": "on"}, follow=True)
    assert "Removed 2 images and 0 masks" in answer.content.decode()
    assert list(Image.objects.values_list("pk", flat=True)) == [images[2].pk]
    answer = client.post(url, {"image_ids": ["x1"], "confirm": "on"}, follow=True)
    assert "not an image id" in answer.content.decode()
    answer = client.post(url, {"confirm": "on"}, follow=True)
    assert "Select the images to remove first" in answer.content.decode()


def test_the_page_form_is_forbidden_to_annotators(project, annotator_user):
    image = add_image(project, 40, 30, 1)
    answer = logged_in(annotator_user).post(
        f"/projects/{project.pk}/images/remove/", {"image_ids": [image.pk], "confirm": "on"}
    )
    assert answer.status_code == 403
    assert Image.objects.count() == 1
