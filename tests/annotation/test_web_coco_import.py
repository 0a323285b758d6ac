"""The project page's COCO import form (annotation/web/coco_import.py): admins import a file
and see the summary; a refused file shows its problems on the page (400); others get 403."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from annotation.models import Mask, Project
from annotation.services.projects import membership_set
from engine.models import Job
from tests.annotation.test_export import add_image

pytestmark = pytest.mark.django_db


def logged_in(project: Project, role: str) -> Client:
    user = User.objects.create_user(f"{role}-web")
    membership_set(project=project, user=user, role=role)
    client = Client()
    client.force_login(user)
    return client


def coco_file(file_name: str, segmentation: Any) -> SimpleUploadedFile:
    document = {
        "images": [{"id": 1, "file_name": file_name, "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "segmentation": segmentation}],
    }
    return SimpleUploadedFile("labels.json", json.dumps(document).encode(), "application/json")


def test_an_admin_imports_from_the_project_page() -> None:
    project = Project.objects.create(name="Web import")
    image = add_image(project, 40, 30, 1)
    client = logged_in(project, "admin")
    page = client.get(f"/projects/{project.pk}/")
    assert b'id="coco-import"' in page.content
    answer = client.post(
        f"/projects/{project.pk}/import-coco/",
        {"annotations": coco_file(image.file_name, [[1, 1, 30, 1, 30, 20]])},
        follow=True,
    )
    assert answer.status_code == 200
    assert b"Imported 1 masks onto 1 images, 0 already in the project (job #" in answer.content
    assert Mask.objects.get(project=project).source == "imported"


def test_a_refused_file_lists_its_problems_on_the_page() -> None:
    project = Project.objects.create(name="Web refused")
    add_image(project, 40, 30, 1)
    client = logged_in(project, "admin")
    answer = client.post(
        f"/projects/{project.pk}/import-coco/",
        {"annotations": coco_file("unknown.png", [[1, 1, 30, 1, 30, 20]])},
    )
    assert answer.status_code == 400
    html = answer.content.decode()
    assert "Nothing was imported</strong> from labels.json: 1 problem." in html
    assert "no image of the project is named &#x27;unknown.png&#x27;" in html
    assert not Mask.objects.exists()


def test_annotators_cannot_import() -> None:
    project = Project.objects.create(name="Web annotator")
    image = add_image(project, 40, 30, 1)
    client = logged_in(project, "annotator")
    assert b'id="coco-import"' not in client.get(f"/projects/{project.pk}/").content
    answer = client.post(
        f"/projects/{project.pk}/import-coco/",
        {"annotations": coco_file(image.file_name, [[1, 1, 30, 1, 30, 20]])},
    )
    assert answer.status_code == 403
    assert not Mask.objects.exists()


def test_an_admin_deletes_an_imports_masks_from_its_job_page() -> None:
    project = Project.objects.create(name="Web undo")
    image = add_image(project, 40, 30, 1)
    admin = logged_in(project, "admin")
    admin.post(
        f"/projects/{project.pk}/import-coco/",
        {"annotations": coco_file(image.file_name, [[1, 1, 30, 1, 30, 20]])},
    )
    job = Job.objects.get(kind="import_masks")
    page = admin.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="undo-import"' in page
    assert 'name="confirm" required' in page  # the browser asks for the tick first
    annotator = logged_in(project, "annotator")
    assert 'id="undo-import"' not in annotator.get(f"/jobs/{job.pk}/").content.decode()
    assert annotator.post(f"/jobs/{job.pk}/undo-import/").status_code == 403
    assert Mask.objects.filter(project=project).count() == 1
    unticked = admin.post(f"/jobs/{job.pk}/undo-import/", follow=True).content.decode()
    assert "Tick the box to confirm" in unticked
    assert Mask.objects.filter(project=project).count() == 1
    answer = admin.post(f"/jobs/{job.pk}/undo-import/", {"confirm": "on"}, follow=True)
    assert f"Deleted 1 masks of import #{job.pk}." in answer.content.decode()
    assert not Mask.objects.filter(project=project).exists()
    export = Job.objects.create(project=project, kind="export", status="succeeded")
    assert 'id="undo-import"' not in admin.get(f"/jobs/{export.pk}/").content.decode()
    refused = admin.post(
        f"/jobs/{export.pk}/undo-import/", {"confirm": "on"}, follow=True
    ).content.decode()
    assert "Not undone: job #" in refused


@override_settings(MASKLOOP_MAX_COCO_UPLOAD_BYTES=100)
def test_a_file_over_the_upload_limit_points_to_the_command() -> None:
    project = Project.objects.create(name="Web too large")
    image = add_image(project, 40, 30, 1)
    answer = logged_in(project, "admin").post(
        f"/projects/{project.pk}/import-coco/",
        {"annotations": coco_file(image.file_name, [[1, 1, 30, 1, 30, 20]] * 10)},
        follow=True,
    )
    assert "import it with manage.py import_coco on the server" in answer.content.decode()
    assert not Mask.objects.exists()
    assert not Job.objects.exists()
