"""Deleting a project (annotation.services.project_deletion): every row of it goes in one
transaction, protected training rows and the cron schedule included; the purge job deletes its
files but keeps what other projects share; refusals change nothing; the API, the project page
and the command."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django_celery_beat.models import PeriodicTask

from annotation.errors import ConflictError
from annotation.models import Image, Mask, Membership, Project
from annotation.services.project_deletion import (
    DeletionRefused,
    deleted_project_purge,
    project_delete,
)
from engine.models import Job, ModelVersion
from engine.services.embeddings import embedding_key
from engine.services.jobs import job_create
from engine.services.registry import onnx_decoder_key, onnx_variant_key
from storage.blobs import get_blob_store
from tests.annotation.test_export import add_image
from tests.annotation.test_image_removal import with_masks
from tests.factories import client_for
from tests.training.promotion_helpers import make_version
from training.models import RoundSettings, TrainingRound, ValidationSplit
from training.services.round_run import state_key
from training.services.schedule import periodic_task_name

pytestmark = pytest.mark.django_db


def with_files(version: ModelVersion) -> list[str]:
    """Store the version's checkpoint and ONNX files; their keys."""
    onnx = onnx_decoder_key(version.sha256)
    ModelVersion.objects.filter(pk=version.pk).update(onnx_decoder_key=onnx)
    keys = [version.checkpoint_key, onnx, onnx_variant_key(onnx, "low_res")]
    for key in keys:
        get_blob_store().put_bytes(key, b"model bytes")
    return keys


def full_project(project: Project) -> None:
    """Images with masks and embeddings, two versions (one deployed, one a round's child), a
    finished round with its state file, a validation split, a cron schedule, an export."""
    store = get_blob_store()
    images = [add_image(project, 40, 30, seed) for seed in range(2)]
    with_masks(images[0], 3)
    parent, child = make_version(project), make_version(project)
    with_files(parent)
    with_files(child)
    Project.objects.filter(pk=project.pk).update(deployed_version=parent)
    embeddings = [
        embedding_key(model_version_id=version.pk, image_sha256=image.sha256)
        for version in (parent, child)
        for image in images
    ]
    for key in embeddings:
        store.put_bytes(key, b"embedding")
    train = Job.objects.create(project=project, kind="train", status="succeeded")
    training_round = TrainingRound.objects.create(
        project=project, number=1, job=train, parent_version=parent, produced_version=child,
        train_masks=3, train_images=1, validation_masks=0, validation_images=1,
    )  # fmt: skip
    store.put_bytes(state_key(training_round.pk), b"state")
    ValidationSplit.objects.create(project=project, image_ids=[images[1].pk], seed=1)
    settings = RoundSettings.objects.create(project=project, schedule_cron="0 3 * * *")
    settings.save()  # syncs the PeriodicTask
    export = Job.objects.create(project=project, kind="export", status="succeeded")
    store.put_bytes(f"exports/{export.pk}/cats-coco.json", b"{}")


def test_deleting_a_project_deletes_its_rows_then_its_files(project, admin_user):
    full_project(project)
    assert PeriodicTask.objects.filter(name=periodic_task_name(project.pk)).exists()
    store = get_blob_store()

    deleted = project_delete(project=project, confirm="cats", user=admin_user, enqueue=False)
    assert (deleted.name, deleted.images, deleted.masks, deleted.versions) == ("cats", 2, 3, 2)
    assert not Project.objects.filter(pk=project.pk).exists()
    for model in (Image, Mask, Membership, ModelVersion, TrainingRound, ValidationSplit):
        assert not model.objects.exists(), model
    assert not RoundSettings.objects.exists()
    assert not PeriodicTask.objects.filter(name=periodic_task_name(project.pk)).exists()
    job = deleted.job
    assert (job.kind, job.project_id, job.status) == ("delete_project", None, "queued")
    assert Job.objects.count() == 1  # the project's own jobs went with it

    result = deleted_project_purge(job_id=job.pk)
    assert result is not None
    assert result["blobs"] == {
        "deleted": 2, "kept": 0, "gone": 0, "restored": 0, "embeddings_deleted": 4,
        "model_files_deleted": 6, "other_files_deleted": 2,
    }  # fmt: skip
    assert list(store.list("")) == []
    assert deleted_project_purge(job_id=job.pk) is None


def test_files_another_project_shares_are_kept(project):
    other = Project.objects.create(name="dogs")
    shared_image = add_image(project, 40, 30, 1)
    theirs = add_image(other, 40, 30, 1)
    mine = make_version(project)
    files = with_files(mine)
    ModelVersion.objects.create(
        project=other, arch="vit_tiny", checkpoint_key=mine.checkpoint_key, sha256=mine.sha256
    )
    deleted = project_delete(project=project, confirm="cats", enqueue=False)
    result = deleted_project_purge(job_id=deleted.job.pk) or {}
    assert (result["blobs"]["kept"], result["blobs"]["model_files_deleted"]) == (1, 0)
    store = get_blob_store()
    assert store.exists(theirs.blob_key)
    assert shared_image.blob_key == theirs.blob_key
    assert all(store.exists(key) for key in files)


@pytest.mark.parametrize("confirm", [None, "", "Cats", "cats "])
def test_the_exact_name_is_needed(project, confirm):
    add_image(project, 40, 30, 1)
    with pytest.raises(DeletionRefused, match="exact name"):
        project_delete(project=project, confirm=confirm)
    assert Project.objects.filter(pk=project.pk).exists()
    assert Image.objects.count() == 1


@pytest.mark.parametrize("kind", ["embed", "ingest", "remove_images", "train", "export"])
def test_refused_while_a_job_of_the_project_is_active(project, kind):
    busy = job_create(kind=kind, project=project)
    with pytest.raises(ConflictError, match=f"#{busy.pk}"):
        project_delete(project=project, confirm="cats")
    assert Project.objects.filter(pk=project.pk).exists()
    assert list(Job.objects.values_list("pk", flat=True)) == [busy.pk]


# --- API, page, command -------------------------------------------------------------------------


def test_the_api_deletes_for_admins_only(project, admin_client, annotator_client, outsider_user):
    add_image(project, 40, 30, 1)
    url = f"/api/projects/{project.pk}/"
    assert annotator_client.delete(f"{url}?confirm=cats").status_code == 403
    assert client_for(outsider_user).delete(f"{url}?confirm=cats").status_code == 404
    refused = admin_client.delete(f"{url}?confirm=dogs")
    assert refused.status_code == 400
    assert refused.json()["code"] == "deletion_refused"
    assert Project.objects.filter(pk=project.pk).exists()
    answer = admin_client.delete(f"{url}?confirm=cats")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert {k: body[k] for k in ("name", "images", "masks", "versions")} == {
        "name": "cats", "images": 1, "masks": 0, "versions": 0,
    }  # fmt: skip
    assert Job.objects.get(pk=body["job"]).kind == "delete_project"
    assert admin_client.get(url).status_code == 404


def test_the_page_form_needs_the_name(project, admin_user, annotator_user):
    client = Client()
    client.force_login(admin_user)
    html = client.get(f"/projects/{project.pk}/").content.decode()
    assert "data-delete-project" in html
    other = Client()
    other.force_login(annotator_user)
    assert "data-delete-project" not in other.get(f"/projects/{project.pk}/").content.decode()
    url = f"/projects/{project.pk}/delete/"
    assert other.post(url, {"confirm": "cats"}).status_code == 403
    answer = client.post(url, {"confirm": "cat"}, follow=True)
    assert "Not deleted" in answer.content.decode()
    answer = client.post(url, {"confirm": "cats"})
    assert answer.status_code == 302
    assert answer["Location"] == "/"
    assert not Project.objects.filter(pk=project.pk).exists()


def test_the_command_says_what_would_go_then_deletes(project):
    image = add_image(project, 40, 30, 1)
    out = StringIO()
    call_command("delete_project", "cats", stdout=out)
    assert "would delete project 'cats'" in out.getvalue()
    assert "1 images" in out.getvalue()
    assert Project.objects.filter(pk=project.pk).exists()
    out = StringIO()
    call_command("delete_project", "cats", "--yes", "--no-progress", stdout=out)
    assert "deleted project 'cats': 1 images" in out.getvalue()
    assert "deleted 1 image files" in out.getvalue()
    assert not get_blob_store().exists(image.blob_key)
    assert Job.objects.get().status == "succeeded"
    with pytest.raises(CommandError, match="unknown project"):
        call_command("delete_project", "cats", "--yes")


def test_an_import_beside_a_deletion_stores_deleted_model_files_again(project, monkeypatch):
    """A checkpoint shared with a deleted project: its purge deleted the files after the
    import found them (and skipped storing them), before the import registered its version."""
    from engine.services import registry
    from tests.e2e.test_tool import TINY

    other = Project.objects.create(name="dogs")
    first = registry.model_version_import(project=other, path_or_file=TINY)
    keys = [
        first.checkpoint_key,
        first.onnx_decoder_key,
        onnx_variant_key(first.onnx_decoder_key, "low_res"),
    ]
    job_create(kind="delete_project")  # a deletion is running
    real_register = registry._register

    def purge_then_register(**kwargs: object) -> ModelVersion:
        for key in keys:
            get_blob_store().delete(key)
        return real_register(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(registry, "_register", purge_then_register)
    again = registry.model_version_import(project=project, path_or_file=TINY)
    assert again.sha256 == first.sha256
    assert all(get_blob_store().exists(key) for key in keys)
