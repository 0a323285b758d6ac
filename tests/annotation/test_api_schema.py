"""The OpenAPI schema: generated without warnings, listing every endpoint with its operation id."""

import io
import re

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

EXPECTED_OPERATIONS = {
    ("post", "/api/auth/token/"): "auth_token_create",
    ("get", "/api/projects/"): "projects_list",
    ("post", "/api/projects/"): "projects_create",
    ("get", "/api/projects/{project_id}/"): "projects_retrieve",
    ("patch", "/api/projects/{project_id}/"): "projects_partial_update",
    ("get", "/api/projects/{project_id}/members/"): "members_list",
    ("post", "/api/projects/{project_id}/members/"): "members_set",
    ("delete", "/api/projects/{project_id}/members/{user_id}/"): "members_remove",
    ("get", "/api/projects/{project_id}/images/"): "images_list",
    ("post", "/api/projects/{project_id}/images/"): "images_upload",
    ("get", "/api/images/{image_id}/"): "images_retrieve",
    ("post", "/api/images/{image_id}/skip/"): "images_skip",
    ("post", "/api/projects/{project_id}/images/reopen/"): "images_reopen",
    ("get", "/api/images/{image_id}/content/"): "images_content",
    ("get", "/api/images/{image_id}/thumbnail/"): "images_thumbnail",
    ("get", "/api/images/{image_id}/masks/"): "image_masks_list",
    ("get", "/api/projects/{project_id}/masks/"): "masks_list",
    ("patch", "/api/masks/{mask_id}/"): "masks_edit",
    ("post", "/api/images/{image_id}/review/approve/"): "image_masks_approve",
    ("post", "/api/images/{image_id}/review/undo/"): "image_masks_unreview",
    ("post", "/api/projects/{project_id}/exports/"): "exports_create",
    ("post", "/api/projects/{project_id}/annotation-imports/"): "annotations_import_coco",
    (
        "delete",
        "/api/projects/{project_id}/annotation-imports/{job_id}/",
    ): "annotations_import_undo",
    ("get", "/api/projects/{project_id}/jobs/"): "jobs_list",
    ("get", "/api/jobs/{job_id}/"): "jobs_retrieve",
    ("post", "/api/jobs/{job_id}/cancel/"): "jobs_cancel",
    ("get", "/api/jobs/{job_id}/files/{name}"): "jobs_file_download",
    ("get", "/api/projects/{project_id}/model-versions/"): "model_versions_list",
    ("post", "/api/projects/{project_id}/model-versions/"): "model_versions_import",
    ("get", "/api/model-versions/{version_id}/"): "model_versions_retrieve",
    ("post", "/api/model-versions/{version_id}/deploy/"): "model_versions_deploy",
    ("post", "/api/projects/{project_id}/embeddings/precompute/"): "embeddings_precompute",
    ("post", "/api/projects/{project_id}/embeddings/requests/"): "embeddings_request",
}


def test_the_schema_generates_without_warnings_or_errors(tmp_path):
    out = io.StringIO()
    target = tmp_path / "schema.yaml"
    # --fail-on-warn turns any warning (unresolvable type, enum collision...) into an error.
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(target), stderr=out)
    text = target.read_text()
    assert text.startswith("openapi: 3")
    assert "/api/projects/{project_id}/exports/" in text


def test_the_schema_lists_every_endpoint_with_its_operation_id(admin_user: User):
    client = APIClient()
    client.force_authenticate(admin_user)
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    found = {
        (method, path): operation["operationId"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    for key, operation_id in EXPECTED_OPERATIONS.items():
        assert found.get(key) == operation_id, key
    assert len(set(found.values())) == len(found)  # operation ids are unique


def test_the_api_docs_page_loads_its_assets_locally(admin_user: User):
    client = APIClient()
    client.force_authenticate(admin_user)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert not re.search(r"""(src|href)=["']https?://""", html)
