"""REST: checkpoint import and deploy (admins), embedding precompute (admins) and requests."""

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.services.projects import membership_set, project_create
from engine.models import Job, ModelVersion
from storage.blobs import get_blob_store
from tests.engine.conftest import GOLDEN_CHECKPOINT, add_images, register_golden
from tests.factories import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def cats(admin_user, annotator_user):
    project = project_create(name="cats", creator=admin_user)
    membership_set(project=project, user=annotator_user, role="annotator")
    return project


def upload(name: str = "sam_vit_tiny.pth", data: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, GOLDEN_CHECKPOINT.read_bytes() if data is None else data)


def test_an_admin_imports_and_deploys_a_checkpoint(cats, admin_user):
    response = client_for(admin_user).post(
        f"/api/projects/{cats.pk}/model-versions/",
        {"file": upload(), "arch": "vit_tiny", "deploy": "true"},
        format="multipart",
    )
    assert response.status_code == 201, response.data
    assert response.data["arch"] == "vit_tiny"
    assert response.data["is_deployed"] is True
    assert response.data["name"] == "sam_vit_tiny.pth"
    cats.refresh_from_db()
    assert cats.deployed_version_id == response.data["id"]


def test_a_bad_checkpoint_upload_is_a_400_that_stores_nothing(cats, admin_user):
    response = client_for(admin_user).post(
        f"/api/projects/{cats.pk}/model-versions/",
        {"file": upload("junk.pth", b"not a checkpoint at all")},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.data["error"] == "checkpoint_rejected"
    assert response.data["detail"].startswith("junk.pth: not a checkpoint")
    assert not ModelVersion.objects.exists()
    assert list(get_blob_store().list()) == []


def test_a_checkpoint_with_nan_weights_is_a_400_that_stores_nothing(cats, admin_user, tmp_path):
    state = torch.load(GOLDEN_CHECKPOINT, weights_only=True)
    state["mask_decoder.iou_token.weight"][0, :2] = float("inf")
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    response = client_for(admin_user).post(
        f"/api/projects/{cats.pk}/model-versions/",
        {"file": upload("diverged.pth", path.read_bytes())},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.data["error"] == "checkpoint_rejected"
    assert response.data["detail"] == (
        "diverged.pth: non-finite weights (NaN or infinity) in mask_decoder.iou_token.weight "
        "(2 of 64 values)"
    )
    assert not ModelVersion.objects.exists()
    assert list(get_blob_store().list()) == []


def test_an_annotator_may_not_import_or_deploy(cats, annotator_user):
    version = register_golden(cats)
    client = client_for(annotator_user)
    imported = client.post(
        f"/api/projects/{cats.pk}/model-versions/", {"file": upload()}, format="multipart"
    )
    deployed = client.post(f"/api/model-versions/{version.pk}/deploy/")
    assert (imported.status_code, deployed.status_code) == (403, 403)
    assert ModelVersion.objects.count() == 1
    cats.refresh_from_db()
    assert cats.deployed_version is None


def test_an_outsider_gets_404_on_every_engine_write(cats, outsider_user):
    version = register_golden(cats)
    client = client_for(outsider_user)
    responses = [
        client.post(f"/api/projects/{cats.pk}/model-versions/", {"file": upload()}),
        client.post(f"/api/model-versions/{version.pk}/deploy/"),
        client.post(f"/api/projects/{cats.pk}/embeddings/precompute/", {}, format="json"),
        client.post(
            f"/api/projects/{cats.pk}/embeddings/requests/", {"image_ids": [1]}, format="json"
        ),
    ]
    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert not Job.objects.exists()


def test_an_admin_deploys_a_version(cats, admin_user):
    version = register_golden(cats)
    response = client_for(admin_user).post(f"/api/model-versions/{version.pk}/deploy/")
    assert response.status_code == 200
    assert response.data["is_deployed"] is True
    cats.refresh_from_db()
    assert cats.deployed_version_id == version.pk


def test_an_admin_starts_a_precompute_job_for_the_deployed_version(cats, admin_user):
    version = register_golden(cats)
    add_images(cats, 2)
    client = client_for(admin_user)
    refused = client.post(f"/api/projects/{cats.pk}/embeddings/precompute/", {}, format="json")
    assert refused.status_code == 400
    assert refused.data["error"] == "embedding_refused"
    client.post(f"/api/model-versions/{version.pk}/deploy/")
    response = client.post(f"/api/projects/{cats.pk}/embeddings/precompute/", {}, format="json")
    assert response.status_code == 202
    assert (response.data["kind"], response.data["progress_total"]) == ("embed", 2)
    assert Job.objects.get().params["model_version_id"] == version.pk


def test_an_annotator_requests_the_images_they_will_open(cats, annotator_user, admin_user):
    version = register_golden(cats)
    images = add_images(cats, 2)
    client_for(admin_user).post(f"/api/model-versions/{version.pk}/deploy/")
    ids = [images[1].pk, images[0].pk]
    response = client_for(annotator_user).post(
        f"/api/projects/{cats.pk}/embeddings/requests/", {"image_ids": ids}, format="json"
    )
    assert response.status_code == 202
    assert response.data["queued"] == ids


def test_a_request_naming_an_image_of_another_project_is_a_400(cats, annotator_user, admin_user):
    version = register_golden(cats)
    client_for(admin_user).post(f"/api/model-versions/{version.pk}/deploy/")
    dogs = project_create(name="dogs", creator=admin_user)
    [foreign] = add_images(dogs, 1)
    response = client_for(annotator_user).post(
        f"/api/projects/{cats.pk}/embeddings/requests/", {"image_ids": [foreign.pk]}, format="json"
    )
    assert response.status_code == 400
    assert f"no images [{foreign.pk}]" in response.data["detail"]
