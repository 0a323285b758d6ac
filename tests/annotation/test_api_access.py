"""Access rules on every endpoint: outsiders get 404, annotators 403 on admin-only endpoints,
anonymous callers 401/403; and a refused call changes nothing and queues nothing."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rest_framework.test import APIClient

from annotation.models import Image, Mask, Membership, Project
from annotation.services.export import export_run, export_start
from annotation.services.ingest import images_ingest_batch
from annotation.services.masks import mask_create
from annotation.services.projects import membership_set, project_create
from engine.models import Job, ModelVersion
from engine.services.jobs import job_create
from storage.blobs import get_blob_store
from tests.factories import client_for, png

pytestmark = pytest.mark.django_db

# A real SAM checkpoint (vit_tiny, official key layout): a leaked import would register it.
TINY_CHECKPOINT = Path(__file__).parents[1] / "engine" / "sam" / "goldens" / "tiny_sam.pth"


@dataclass
class World:
    project: Project
    image: Image
    finished_job: Job
    queued_job: Job
    version: ModelVersion
    annotator: User


@pytest.fixture
def world(admin_user: User, annotator_user: User, outsider_user: User) -> World:
    project = project_create(name="cats", creator=admin_user)
    membership_set(project=project, user=annotator_user, role="annotator")
    project_create(name="dogs", creator=outsider_user)
    (outcome,) = images_ingest_batch(project=project, files=[("a.png", png(1))])
    assert outcome.image is not None
    binary = np.zeros((30, 40), dtype=bool)
    binary[2:12, 3:13] = True
    mask_create(image=outcome.image, binary=binary, source="manual")
    finished = export_start(project=project, fmt="coco", user=admin_user, enqueue=False)
    export_run(job_id=finished.pk)
    queued = job_create(kind="export", project=project, params={"format": "coco"})
    version = ModelVersion.objects.create(
        project=project, arch="vit_b", checkpoint_key="models/x", sha256="c" * 64
    )
    return World(project, outcome.image, finished, queued, version, annotator_user)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    admin_only: bool
    body: Any = None  # or a function of the World, called for each request
    multipart: bool = False
    served: int = 200  # the status a member gets on an endpoint that is not admin-only

    def url(self, world: World) -> str:
        return self.path.format(
            p=world.project.pk,
            i=world.image.pk,
            j=world.finished_job.pk,
            q=world.queued_job.pk,
            v=world.version.pk,
            u=world.annotator.pk,
        )


CALLS = [
    Call("get", "/api/projects/{p}/", False),
    Call("patch", "/api/projects/{p}/", True, {"name": "renamed", "description": "new"}),
    Call("get", "/api/projects/{p}/members/", False),
    Call("post", "/api/projects/{p}/members/", True, {"username": "eve", "role": "admin"}),
    Call("delete", "/api/projects/{p}/members/{u}/", True),
    Call("get", "/api/projects/{p}/images/", False),
    Call("post", "/api/projects/{p}/images/", True, lambda w: upload_body(), multipart=True),
    Call("get", "/api/images/{i}/", False),
    Call("get", "/api/images/{i}/content/", False),
    Call("get", "/api/images/{i}/thumbnail/", False),
    Call("get", "/api/images/{i}/masks/", False),
    Call("get", "/api/projects/{p}/masks/", False),
    Call("post", "/api/projects/{p}/exports/", True, {"format": "coco"}),
    Call("get", "/api/projects/{p}/jobs/", False),
    Call("get", "/api/jobs/{j}/", False),
    Call("post", "/api/jobs/{q}/cancel/", True),
    Call("get", "/api/jobs/{j}/files/cats-coco.json", True),
    Call("get", "/api/projects/{p}/model-versions/", False),
    Call("post", "/api/projects/{p}/model-versions/", True, lambda w: checkpoint_body(), True),
    Call("get", "/api/model-versions/{v}/", False),
    Call("post", "/api/model-versions/{v}/deploy/", True),
    Call(
        "post",
        "/api/projects/{p}/embeddings/precompute/",
        True,
        lambda w: {"model_version": w.version.pk},
    ),
    Call(
        "post",
        "/api/projects/{p}/embeddings/requests/",
        False,
        lambda w: {"image_ids": [w.image.pk], "model_version": w.version.pk},
        served=202,
    ),
]
IDS = [f"{call.method} {call.path}" for call in CALLS]


def upload_body() -> dict[str, Any]:
    return {"files": [SimpleUploadedFile("new.png", png(99))]}


def checkpoint_body() -> dict[str, Any]:
    content = TINY_CHECKPOINT.read_bytes()
    return {"file": SimpleUploadedFile("sam_vit_tiny.pth", content), "deploy": "true"}


def perform(client: APIClient, call: Call, world: World) -> Any:
    body = call.body(world) if callable(call.body) else call.body
    request = getattr(client, call.method)
    if call.multipart:
        return request(call.url(world), body, format="multipart")
    return request(call.url(world), body, format="json")


def snapshot() -> dict[str, Any]:
    """Everything a call could change."""
    return {
        "projects": sorted(
            Project.objects.values_list("id", "name", "description", "deployed_version_id")
        ),
        "members": sorted(Membership.objects.values_list("project_id", "user_id", "role")),
        "images": sorted(Image.objects.values_list("id", flat=True)),
        "masks": sorted(Mask.objects.values_list("id", "status")),
        "jobs": sorted(Job.objects.values_list("id", "status")),
        "model_versions": sorted(ModelVersion.objects.values_list("id", "sha256", "status")),
        "blobs": list(get_blob_store().list()),
    }


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_a_user_of_another_project_gets_404_and_changes_nothing(
    world, outsider_user, call, django_capture_on_commit_callbacks
):
    before = snapshot()
    with django_capture_on_commit_callbacks() as queued:
        response = perform(client_for(outsider_user), call, world)
    assert response.status_code == 404
    assert snapshot() == before
    assert queued == []  # no task sent either (exports, embeddings)


@pytest.mark.parametrize("call", [c for c in CALLS if c.admin_only], ids=lambda c: c.path)
def test_an_annotator_gets_403_on_admin_only_endpoints_and_changes_nothing(
    world, call, django_capture_on_commit_callbacks
):
    before = snapshot()
    with django_capture_on_commit_callbacks() as queued:
        response = perform(client_for(world.annotator), call, world)
    assert response.status_code == 403
    assert snapshot() == before
    assert queued == []


@pytest.mark.parametrize("call", [c for c in CALLS if not c.admin_only], ids=lambda c: c.path)
def test_an_annotator_is_served_on_the_member_endpoints_of_their_project(world, call):
    response = perform(client_for(world.annotator), call, world)
    assert response.status_code == call.served


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_an_anonymous_caller_is_refused_and_changes_nothing(
    world, call, django_capture_on_commit_callbacks
):
    before = snapshot()
    with django_capture_on_commit_callbacks() as queued:
        response = perform(client_for(None), call, world)
    assert response.status_code in (401, 403)
    assert snapshot() == before
    assert queued == []


def test_an_anonymous_caller_cannot_list_or_create_projects():
    client = client_for(None)
    assert client.get("/api/projects/").status_code in (401, 403)
    assert client.post("/api/projects/", {"name": "x"}, format="json").status_code in (401, 403)
    assert not Project.objects.exists()


def test_the_project_list_of_an_outsider_leaves_other_projects_out(world, outsider_user):
    response = client_for(outsider_user).get("/api/projects/")
    assert [row["name"] for row in response.data["results"]] == ["dogs"]


def test_a_reviewer_is_still_refused_admin_only_endpoints(world, outsider_user):
    membership_set(project=world.project, user=outsider_user, role="reviewer")
    response = client_for(outsider_user).post(
        f"/api/projects/{world.project.pk}/exports/", {"format": "coco"}, format="json"
    )
    assert response.status_code == 403
    assert Job.objects.filter(project=world.project).count() == 2


def test_an_unknown_api_url_answers_json_in_the_api_error_shape() -> None:
    response = APIClient().get("/api/no-such-endpoint/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "not_found"
    assert "/api/no-such-endpoint/" in body["detail"]


def test_an_unknown_page_outside_the_api_answers_the_sites_page() -> None:
    from django.test import Client

    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert b'data-status="404"' in response.content


def test_a_crash_under_the_api_answers_json_and_elsewhere_the_sites_page() -> None:
    from django.test import RequestFactory

    from config.errors import server_error

    api = server_error(RequestFactory().get("/api/projects/"))
    assert api.status_code == 500
    assert api["Content-Type"] == "application/json"
    assert b'"code": "server_error"' in api.content
    page = server_error(RequestFactory().get("/projects/"))
    assert page.status_code == 500
    assert b'data-status="500"' in page.content


# --- with DEBUG on (`make run`'s default): the API still answers JSON ---------------------------


@pytest.mark.parametrize("path", ["/api/nonexistent/", "/api/projects/abc/", "/api/jobs/2/files/"])
def test_with_debug_on_an_unknown_api_url_answers_the_json_404(path: str) -> None:
    with override_settings(DEBUG=True):
        response = APIClient().get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"
    assert path in response.json()["detail"]


def test_the_api_catch_all_keeps_slash_redirects_and_ignores_csrf(admin_user: User) -> None:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    for debug in (True, False):
        with override_settings(DEBUG=debug):
            moved = client.get("/api/projects?limit=1")
            assert (moved.status_code, moved["Location"]) == (301, "/api/projects/?limit=1")
            posted = client.post("/api/nonexistent/", {})  # no CSRF token: still a 404
            assert (posted.status_code, posted.json()["code"]) == (404, "not_found")
    with override_settings(DEBUG=True):
        page = client.get("/no-such-page/")  # web pages keep Django's debug page
    assert (page.status_code, page["Content-Type"].split(";")[0]) == (404, "text/html")


def test_with_debug_on_a_crash_under_the_api_answers_the_json_500_and_logs_it(
    admin_user: User, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from annotation.api.projects import ProjectListCreateApi

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom in the view")

    monkeypatch.setattr(ProjectListCreateApi, "get", crash)
    client = client_for(admin_user)
    with override_settings(DEBUG=True), caplog.at_level("ERROR", logger="config.errors"):
        response = client.get("/api/projects/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "server_error"
    (record,) = [r for r in caplog.records if r.name == "config.errors"]
    assert record.exc_info is not None
    assert "boom in the view" in str(record.exc_info[1])
    # DEBUG off: Django's handler500 answers, so the test client re-raises as before.
    with pytest.raises(RuntimeError, match="boom in the view"):
        client.get("/api/projects/")


def test_the_debug_middleware_leaves_web_pages_and_client_errors_to_django() -> None:
    from django.core.exceptions import PermissionDenied
    from django.http import HttpResponse
    from django.test import RequestFactory

    from config.errors import ApiDebugErrorsMiddleware

    middleware = ApiDebugErrorsMiddleware(lambda request: HttpResponse())
    factory = RequestFactory()
    with override_settings(DEBUG=True):
        assert middleware.process_exception(factory.get("/projects/"), RuntimeError()) is None
        api = factory.get("/api/projects/")
        assert middleware.process_exception(api, PermissionDenied()) is None
        answer = middleware.process_exception(api, RuntimeError())
        assert answer is not None
        assert answer.status_code == 500
    with override_settings(DEBUG=False):
        assert middleware.process_exception(api, RuntimeError()) is None
