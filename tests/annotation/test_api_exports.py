"""Exports and jobs over the REST API: start, progress, cancel, download."""

import io
import json
import tarfile

import numpy as np
import pytest
from rest_framework.test import APIClient

from annotation.models import Project
from annotation.services.export import export_run
from annotation.services.ingest import images_ingest_batch
from annotation.services.masks import mask_create
from engine.models import Job
from engine.services.jobs import job_create
from tests.factories import png

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(project: Project) -> Project:
    """The shared "cats" project, with two images and one manual mask on each."""
    outcomes = images_ingest_batch(project=project, files=[("a.png", png(1)), ("b.png", png(2))])
    for number, outcome in enumerate(outcomes):
        assert outcome.image is not None
        binary = np.zeros((30, 40), dtype=bool)
        binary[5 : 15 + number, 4:20] = True
        mask_create(image=outcome.image, binary=binary, source="manual")
    return project


def start_export(client: APIClient, project: Project, captured, **body) -> dict:
    with captured(execute=False) as callbacks:
        response = client.post(f"/api/projects/{project.pk}/exports/", body, format="json")
    assert response.status_code == 202, response.data
    assert len(callbacks) == 1  # the task is queued once the request's transaction commits
    return response.data


def test_starting_an_export_answers_202_with_a_queued_job(
    project, admin_client, admin_user, django_capture_on_commit_callbacks
):
    body = start_export(admin_client, project, django_capture_on_commit_callbacks, format="coco")
    job = Job.objects.get(pk=body["id"])
    assert body["status"] == "queued"
    assert body["kind"] == "export"
    assert job.params["format"] == "coco"
    assert job.params["status"] == "accepted"
    assert job.created_by == admin_user


def test_an_export_of_reviewed_masks_only_is_recorded_on_its_job(
    project, admin_client, django_capture_on_commit_callbacks
):
    body = start_export(
        admin_client, project, django_capture_on_commit_callbacks, format="coco", reviewed=True
    )
    assert Job.objects.get(pk=body["id"]).params["reviewed"] is True
    answer = admin_client.post(
        f"/api/projects/{project.pk}/exports/",
        {"format": "coco", "reviewed": "maybe"},
        format="json",
    )
    assert answer.status_code == 400
    assert "reviewed" in answer.json()


def test_an_unknown_export_format_is_400_and_creates_no_job(project, admin_client):
    response = admin_client.post(
        f"/api/projects/{project.pk}/exports/", {"format": "voc"}, format="json"
    )
    assert response.status_code == 400
    assert "format" in response.data
    assert not Job.objects.exists()


def test_an_unknown_mask_status_is_400_and_creates_no_job(project, admin_client):
    response = admin_client.post(
        f"/api/projects/{project.pk}/exports/",
        {"format": "coco", "status": "maybe"},
        format="json",
    )
    assert response.status_code == 400
    assert "status" in response.data
    assert not Job.objects.exists()


def test_a_finished_coco_export_is_downloaded_as_coco_json(
    project, admin_client, django_capture_on_commit_callbacks
):
    body = start_export(admin_client, project, django_capture_on_commit_callbacks, format="coco")
    export_run(job_id=body["id"])
    detail = admin_client.get(f"/api/jobs/{body['id']}/")
    assert detail.data["status"] == "succeeded"
    assert detail.data["progress"] == 1.0
    (entry,) = detail.data["files"]
    response = admin_client.get(entry["url"])
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    coco = json.loads(b"".join(response.streaming_content))
    assert len(coco["images"]) == 2
    assert len(coco["annotations"]) == 2
    assert coco["annotations"][0]["iscrowd"] == 0
    assert isinstance(coco["annotations"][0]["segmentation"]["counts"], str)


def test_an_sa1b_export_is_downloaded_as_a_tar_shard(
    project, admin_client, django_capture_on_commit_callbacks
):
    body = start_export(
        admin_client,
        project,
        django_capture_on_commit_callbacks,
        format="sa1b",
        shard_size=10,
        include_images=False,
    )
    export_run(job_id=body["id"])
    files = admin_client.get(f"/api/jobs/{body['id']}/").data["files"]
    assert len(files) == 1
    response = admin_client.get(files[0]["url"])
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content))) as tar:
        names = sorted(member.name for member in tar.getmembers())
    assert len(names) == 2
    assert all(name.endswith(".json") for name in names)


def test_a_file_of_an_unfinished_job_is_404(
    project, admin_client, django_capture_on_commit_callbacks
):
    body = start_export(admin_client, project, django_capture_on_commit_callbacks, format="coco")
    response = admin_client.get(f"/api/jobs/{body['id']}/files/coco.json")
    assert response.status_code == 404


def test_an_unknown_file_name_of_a_finished_job_is_404(
    project, admin_client, django_capture_on_commit_callbacks
):
    body = start_export(admin_client, project, django_capture_on_commit_callbacks, format="coco")
    export_run(job_id=body["id"])
    response = admin_client.get(f"/api/jobs/{body['id']}/files/other.json")
    assert response.status_code == 404


def test_jobs_of_a_project_are_listed_newest_first_and_filtered(project, admin_client):
    older = job_create(kind="export", project=project, params={"format": "coco"})
    newer = job_create(kind="ingest", project=project, params={"source": "/data"})
    listed = admin_client.get(f"/api/projects/{project.pk}/jobs/")
    assert [job["id"] for job in listed.data["results"]] == [newer.pk, older.pk]
    exports = admin_client.get(f"/api/projects/{project.pk}/jobs/", {"kind": "export"})
    assert [job["id"] for job in exports.data["results"]] == [older.pk]


def test_an_admin_cancels_a_queued_job(project, admin_client):
    job = job_create(kind="export", project=project, params={"format": "coco"})
    response = admin_client.post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 200
    assert response.data["status"] == "cancelled"
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED


def test_a_job_without_a_project_is_hidden_from_project_admins(admin_client):
    job = job_create(kind="ingest", params={})
    assert admin_client.get(f"/api/jobs/{job.pk}/").status_code == 404
