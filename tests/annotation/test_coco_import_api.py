"""POST /api/projects/{id}/annotation-imports/: a COCO file uploaded by a project admin is
imported while the request waits (201 with the summary); a bad file answers 400 with its
problems, a file over the limit 413, anyone but an admin 403 / 404, and none of them writes."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from annotation.models import Image, Mask, Project
from annotation.services.projects import membership_set
from engine.models import Job
from tests.annotation.test_export import add_image
from tests.factories import client_for

pytestmark = pytest.mark.django_db

URL = "/api/projects/{}/annotation-imports/"


@pytest.fixture
def project() -> Project:
    return Project.objects.create(name="Uploads")


@pytest.fixture
def image(project: Project) -> Image:
    return add_image(project, 40, 30, 1)


def upload(document: Any, name: str = "instances.json") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, json.dumps(document).encode(), "application/json")


def document_for(image: Image, segmentation: Any) -> dict[str, Any]:
    return {
        "images": [{"id": 1, "file_name": image.file_name, "width": 40, "height": 30}],
        "annotations": [{"id": 5, "image_id": 1, "segmentation": segmentation}],
    }


def member(project: Project, role: str) -> User:
    user = User.objects.create_user(f"{role}-user")
    membership_set(project=project, user=user, role=role)
    return user


def nothing_written(project: Project) -> bool:
    return not Mask.objects.filter(project=project).exists() and not Job.objects.exists()


def test_an_admin_imports_a_file_and_gets_the_summary(project: Project, image: Image) -> None:
    admin = member(project, "admin")
    client = client_for(admin)
    body = {"file": upload(document_for(image, [[1, 1, 30, 1, 30, 20]]))}
    answer = client.post(URL.format(project.pk), body, format="multipart")
    assert answer.status_code == 201, answer.content
    result = answer.json()
    assert {k: result[k] for k in ("images", "masks", "already")} == {
        "images": 1, "masks": 1, "already": 0,
    }  # fmt: skip
    job = Job.objects.get(pk=result["job"])
    assert (job.kind, job.status, job.created_by) == ("import_masks", "succeeded", admin)
    assert job.params["file"] == "instances.json"
    mask = Mask.objects.get(project=project)
    assert (mask.source, mask.status, mask.image_id) == ("imported", "accepted", image.pk)
    again = client.post(
        URL.format(project.pk),
        {"file": upload(document_for(image, [[1, 1, 30, 1, 30, 20]]))},
        format="multipart",
    )
    assert (again.json()["masks"], again.json()["already"]) == (0, 1)


def test_a_bad_file_answers_400_with_its_problems(project: Project, image: Image) -> None:
    client = client_for(member(project, "admin"))
    body = {"file": upload(document_for(image, [[1, 1, 2]]))}
    answer = client.post(URL.format(project.pk), body, format="multipart")
    assert answer.status_code == 400
    result = answer.json()
    assert result["code"] == "coco_refused"
    assert result["details"]["total"] == 1
    assert "at least 3 x, y pairs" in result["details"]["errors"][0]
    assert nothing_written(project)


@override_settings(MASKLOOP_MAX_COCO_UPLOAD_BYTES=100)
def test_a_file_over_the_limit_answers_413(project: Project, image: Image) -> None:
    client = client_for(member(project, "admin"))
    body = {"file": upload(document_for(image, [[1, 1, 30, 1, 30, 20]] * 10))}
    answer = client.post(URL.format(project.pk), body, format="multipart")
    assert answer.status_code == 413
    assert answer.json()["code"] == "too_large"
    assert "manage.py import_coco" in answer.json()["detail"]
    assert nothing_written(project)


def test_only_the_projects_admins_import(project: Project, image: Image) -> None:
    document = document_for(image, [[1, 1, 30, 1, 30, 20]])
    annotator = client_for(member(project, "annotator"))
    answer = annotator.post(URL.format(project.pk), {"file": upload(document)}, format="multipart")
    assert answer.status_code == 403
    stranger = client_for(User.objects.create_user("stranger"))
    answer = stranger.post(URL.format(project.pk), {"file": upload(document)}, format="multipart")
    assert answer.status_code == 404
    answer = client_for(None).post(
        URL.format(project.pk), {"file": upload(document)}, format="multipart"
    )
    assert answer.status_code in (401, 403)
    assert nothing_written(project)


def test_a_request_without_a_file_is_refused(project: Project, image: Image) -> None:
    client = client_for(member(project, "admin"))
    answer = client.post(URL.format(project.pk), {}, format="multipart")
    assert answer.status_code == 400
    assert "file" in answer.json()
    assert nothing_written(project)


def test_an_admin_takes_an_import_back(project: Project, image: Image) -> None:
    admin = member(project, "admin")
    client = client_for(admin)
    body = {"file": upload(document_for(image, [[1, 1, 30, 1, 30, 20]]))}
    job_id = client.post(URL.format(project.pk), body, format="multipart").json()["job"]
    # A mask of the image that the import did not create stays.
    kept = Mask.objects.create(
        project=project, image=image, rle_counts="R2", area=1, bbox=[0, 0, 1, 1],
        stage=project.stage, source="manual",
    )  # fmt: skip
    undo = f"{URL.format(project.pk)}{job_id}/"
    annotator = client_for(member(project, "annotator"))
    assert annotator.delete(undo).status_code == 403
    answer = client.delete(undo)
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"job": job_id, "deleted": 1}
    assert list(Mask.objects.filter(project=project)) == [kept]
    job = Job.objects.get(pk=job_id)
    assert job.message == "undone: 1 imported masks deleted"
    assert job.result["undone"][0]["by"] == admin.get_username()
    assert client.delete(undo).json()["deleted"] == 0  # again: nothing left to delete


def test_only_finished_imports_of_this_project_are_taken_back(
    project: Project, image: Image
) -> None:
    client = client_for(member(project, "admin"))
    other = Project.objects.create(name="Other")
    foreign = Job.objects.create(project=other, kind="import_masks", status="succeeded")
    export = Job.objects.create(project=project, kind="export", status="succeeded")
    running = Job.objects.create(project=project, kind="import_masks", status="running")
    base = URL.format(project.pk)
    assert client.delete(f"{base}{foreign.pk}/").status_code == 404
    refused = client.delete(f"{base}{export.pk}/")
    assert (refused.status_code, refused.json()["code"]) == (400, "undo_refused")
    assert client.delete(f"{base}{running.pk}/").status_code == 409
