"""The web UI through Django's test client: login, pages, upload, export, jobs, admin."""

import re

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from annotation.models import Project
from annotation.services.ingest import images_ingest_batch
from annotation.services.masks import mask_create
from annotation.services.projects import project_create
from engine.models import Job
from engine.services.jobs import job_create, job_start, job_succeed
from tests.factories import png

pytestmark = pytest.mark.django_db


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_pages_need_a_login():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_logging_in_with_the_password_leads_to_the_project_list(project):
    client = Client()
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "bob", "password": "bob-pass-123"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert b"cats" in client.get("/").content


def test_a_wrong_password_shows_the_login_form_again(project):
    response = Client().post("/accounts/login/", {"username": "bob", "password": "nope"})
    assert response.status_code == 200
    assert b"alert-error" in response.content


def test_logging_out_ends_the_session(project, annotator_user):
    client = logged_in(annotator_user)
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_the_project_list_shows_member_projects_with_counts(project, annotator_user):
    project_create(name="secret-dogs")
    (outcome,) = images_ingest_batch(project=project, files=[("a.png", png(1))])
    assert outcome.image is not None
    binary = np.zeros((30, 40), dtype=bool)
    binary[1:9, 1:9] = True
    mask_create(image=outcome.image, binary=binary, source="manual", annotator=annotator_user)
    html = logged_in(annotator_user).get("/").content.decode()
    assert "cats" in html
    assert "secret-dogs" not in html
    counts = dict(re.findall(r'data-count="([a-z-]+)">(\d+)<', html))
    assert counts == {"images": "1", "accepted": "1", "mine-today": "1"}


def test_the_project_page_shows_thumbnails_members_and_stage(project, annotator_user):
    outcomes = images_ingest_batch(project=project, files=[("a.png", png(1)), ("b.png", png(2))])
    response = logged_in(annotator_user).get(f"/projects/{project.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    for outcome in outcomes:
        assert outcome.image is not None
        assert f'src="/api/images/{outcome.image.pk}/thumbnail/" loading="lazy"' in html
    assert "Assisted-manual" in html
    assert "alice" in html
    assert "bob" in html
    assert 'name="files"' not in html  # annotators get no upload form


def test_the_project_page_of_another_project_is_404(project, outsider_user):
    assert logged_in(outsider_user).get(f"/projects/{project.pk}/").status_code == 404


def test_an_admin_sees_the_upload_form_and_export_buttons(project, admin_user):
    html = logged_in(admin_user).get(f"/projects/{project.pk}/").content.decode()
    assert 'name="files"' in html
    assert 'data-export="coco"' in html
    assert 'data-export="sa1b"' in html
    assert 'id="jobs-table"' in html


def test_the_image_grid_is_paginated(project, admin_user):
    images_ingest_batch(project=project, files=[(f"{i}.png", png(i)) for i in range(50)])
    client = logged_in(admin_user)
    first = client.get(f"/projects/{project.pk}/").content.decode()
    second = client.get(f"/projects/{project.pk}/?page=2").content.decode()
    assert first.count('class="tile"') == 48
    assert second.count('class="tile"') == 2
    assert "Page 2 of 2" in second


def test_the_upload_form_imports_every_file(project, admin_user):
    files = [SimpleUploadedFile("a.png", png(1)), SimpleUploadedFile("b.png", png(2))]
    client = logged_in(admin_user)
    response = client.post(f"/projects/{project.pk}/upload/", {"files": files})
    assert response.status_code == 302
    assert project.images.count() == 2
    assert "Imported 2 images" in client.get(response["Location"]).content.decode()


def test_the_upload_form_rejects_all_files_when_one_is_bad(project, admin_user):
    files = [SimpleUploadedFile("a.png", png(1)), SimpleUploadedFile("empty.jpg", b"")]
    response = logged_in(admin_user).post(f"/projects/{project.pk}/upload/", {"files": files})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was imported" in html
    rejected = re.search(r'id="upload-rejections">(.*?)</div>', html, re.S)
    assert rejected is not None
    assert "empty.jpg" in rejected.group(1)
    assert "a.png" not in rejected.group(1)
    assert project.images.count() == 0


def test_the_upload_form_is_forbidden_to_annotators(project, annotator_user):
    files = [SimpleUploadedFile("a.png", png(1))]
    response = logged_in(annotator_user).post(f"/projects/{project.pk}/upload/", {"files": files})
    assert response.status_code == 403
    assert project.images.count() == 0


def test_an_export_button_starts_a_job_shown_in_the_jobs_table(
    project, admin_user, django_capture_on_commit_callbacks
):
    client = logged_in(admin_user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(f"/projects/{project.pk}/export/", {"format": "sa1b"})
    assert response.status_code == 302
    assert response["Location"].endswith("#jobs")
    assert len(callbacks) == 1
    job = Job.objects.get(project=project, kind="export")
    assert (job.params["format"], job.params["reviewed"]) == ("sa1b", False)
    # The box "only masks a reviewer approved or fixed" ticked:
    with django_capture_on_commit_callbacks(execute=False):
        client.post(f"/projects/{project.pk}/export/", {"format": "coco", "reviewed": "1"})
    assert Job.objects.filter(kind="export").latest("pk").params["reviewed"] is True
    table = client.get(f"/projects/{project.pk}/jobs/").content.decode()
    assert f'data-job="{job.pk}" data-status="queued"' in table
    assert 'data-active="1"' in table


def test_the_jobs_table_links_the_files_of_a_finished_export(project, admin_user):
    job = job_create(kind="export", project=project, params={"format": "coco"})
    job_start(job_id=job.pk)
    result = {"files": [{"name": "cats-coco.json", "key": "exports/1/cats-coco.json", "bytes": 9}]}
    job_succeed(job_id=job.pk, result=result)
    table = logged_in(admin_user).get(f"/projects/{project.pk}/jobs/").content.decode()
    assert f'href="/api/jobs/{job.pk}/files/cats-coco.json"' in table
    assert 'data-active="0"' in table


def test_an_unknown_export_format_starts_nothing(project, admin_user):
    response = logged_in(admin_user).post(f"/projects/{project.pk}/export/", {"format": "voc"})
    assert response.status_code == 302
    assert not Job.objects.exists()


def test_the_job_page_shows_status_and_refreshes_while_running(project, admin_user):
    job = job_create(kind="export", project=project, params={"format": "coco"}, total=10)
    job_start(job_id=job.pk)
    client = logged_in(admin_user)
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "Running" in html
    assert 'data-active="1"' in html
    partial = client.get(f"/jobs/{job.pk}/?partial=1").content.decode()
    assert partial.lstrip().startswith('<div id="job-status"')


def test_an_admin_cancels_a_job_from_its_page(project, admin_user):
    job = job_create(kind="export", project=project, params={"format": "coco"})
    response = logged_in(admin_user).post(f"/jobs/{job.pk}/cancel/")
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED


def test_an_annotator_cannot_cancel_a_job(project, annotator_user):
    job = job_create(kind="export", project=project, params={"format": "coco"})
    assert logged_in(annotator_user).post(f"/jobs/{job.pk}/cancel/").status_code == 403
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED


def test_staff_create_a_project_from_the_list_page():
    staff = User.objects.create_user("sam", password="sam-pass-123", is_staff=True)
    response = logged_in(staff).post("/projects/new/", {"name": "birds"})
    project = Project.objects.get(name="birds")
    assert response["Location"] == f"/projects/{project.pk}/"
    assert project.memberships.get().user == staff


def test_a_plain_user_cannot_create_a_project(annotator_user):
    assert logged_in(annotator_user).post("/projects/new/", {"name": "x"}).status_code == 403
    assert not Project.objects.exists()


@pytest.mark.parametrize("model", ["project", "membership", "image", "mask", "modelversion", "job"])
def test_every_model_has_an_admin_changelist(project, model):
    root = User.objects.create_superuser("root", password="root-pass-123")
    app = "engine" if model in {"modelversion", "job"} else "annotation"
    response = logged_in(root).get(f"/admin/{app}/{model}/")
    assert response.status_code == 200


def test_the_admin_action_exports_the_selected_projects(
    project, django_capture_on_commit_callbacks
):
    root = User.objects.create_superuser("root", password="root-pass-123")
    with django_capture_on_commit_callbacks(execute=False):
        response = logged_in(root).post(
            "/admin/annotation/project/",
            {"action": "export_coco", "_selected_action": [project.pk]},
        )
    assert response.status_code == 302
    job = Job.objects.get(project=project)
    assert job.params["format"] == "coco"
    assert job.created_by == root


def test_get_projects_new_shows_staff_the_project_list_with_the_create_form_open():
    """A reload after a refused create (the address bar says /projects/new/) or a pasted link."""
    staff = User.objects.create_user("sam", password="sam-pass-123", is_staff=True)
    response = logged_in(staff).get("/projects/new/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<details class="card create-card" id="create-project" open>' in html
    assert 'action="/projects/new/"' in html


def test_get_projects_new_is_the_403_page_for_a_plain_user(annotator_user):
    response = logged_in(annotator_user).get("/projects/new/")
    assert response.status_code == 403
    assert 'id="error-page" data-status="403"' in response.content.decode()
    assert "only staff users create projects" in response.content.decode()


def test_the_jobs_table_lists_the_latest_jobs_of_every_kind_newest_first(project, admin_user):
    older = [job_create(kind="export", project=project, params={"format": "coco"})]
    older += [job_create(kind="ingest", project=project) for _ in range(2)]
    latest = [
        job_create(kind=kind, project=project, params={"model_version_id": 1})
        for kind in ["embed", "train", "automatic", "prefill", "ingest", "embed", "train"]
    ]
    latest += [job_create(kind="export", project=project, params={"format": "sa1b"})]
    html = logged_in(admin_user).get(f"/projects/{project.pk}/jobs/").content.decode()
    rows = re.findall(r'<tr data-job="(\d+)" data-status="queued" data-kind="([a-z]+)"', html)
    expected = [(str(job.pk), job.kind) for job in [*older[1:], *latest]][::-1]
    assert rows == expected  # 10 shown: the oldest export is left out
    assert f'href="/jobs/{latest[0].pk}/"' in html
    assert "Embedding" in html
    assert "Dataset export · SA1B" in html
