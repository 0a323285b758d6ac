"""Removing images (annotation.services.image_removal): rows and masks go in one transaction,
blobs in the purge job; shared bytes stay while another project has them; refusals change
nothing; the purge and an import of the same bytes never leave a row without its blob."""

import datetime as dt
from io import StringIO
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from annotation.errors import ConflictError
from annotation.models import Image, ImageLease, Mask, Project
from annotation.services import image_removal
from annotation.services.image_removal import (
    RemovalRefused,
    image_blobs_restore,
    images_remove,
    removed_images_purge,
)
from annotation.services.image_sets import ImagesNotFound
from annotation.services.ingest import image_ingest
from annotation.services.masks import mask_create
from engine.models import Job, ModelVersion
from engine.services.embeddings import embedding_key
from engine.services.jobs import job_create, job_start
from storage.blobs import get_blob_store
from tests.annotation.test_export import add_image
from tests.factories import png
from training.models import ValidationSplit

pytestmark = pytest.mark.django_db


def with_masks(image: Image, count: int) -> list[Mask]:
    pixels = np.zeros((image.height, image.width), dtype=bool)
    masks = []
    for index in range(count):
        pixels[index, :] = True
        masks.append(
            mask_create(image=image, binary=pixels.copy(), source="manual", status="accepted")
        )
    return masks


def version_of(project: Project) -> ModelVersion:
    return ModelVersion.objects.create(
        project=project, arch="vit_tiny", checkpoint_key="checkpoints/x.pth", sha256="x" * 64
    )


def embed(version: ModelVersion, image: Image) -> str:
    key = embedding_key(model_version_id=version.pk, image_sha256=image.sha256)
    get_blob_store().put_bytes(key, b"embedding")
    return key


def first_put_lost(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the store lose the first blob it is given right after storing it (as a purge
    running between an import's put and its commit); returns the keys put, in order."""
    store = type(get_blob_store())
    real_put = store.put_bytes
    puts: list[str] = []

    def put_and_lose(self: Any, key: str, data: bytes, **kwargs: Any) -> None:
        real_put(self, key, data, **kwargs)
        if not puts:
            self.delete(key)
        puts.append(key)

    monkeypatch.setattr(store, "put_bytes", put_and_lose)
    return puts


def remove_and_purge(project: Project, ids: list[int]) -> Job:
    removed = images_remove(project=project, image_ids=ids, enqueue=False)
    removed_images_purge(job_id=removed.job.pk)
    removed.job.refresh_from_db()
    return removed.job


def test_removing_images_deletes_rows_masks_leases_embeddings_and_files(project, admin_user):
    store = get_blob_store()
    first, second, kept = (add_image(project, 40, 30, seed) for seed in (1, 2, 3))
    with_masks(first, 3)
    with_masks(second, 2)
    with_masks(kept, 1)
    ImageLease.objects.create(image=first, user=admin_user, expires_at=timezone.now())
    version = version_of(project)
    gone_embedding, kept_embedding = embed(version, first), embed(version, kept)

    removed = images_remove(
        project=project, image_ids=[first.pk, second.pk], user=admin_user, enqueue=False
    )
    assert (removed.images, removed.masks) == (2, 5)
    assert list(Image.objects.filter(project=project).values_list("pk", flat=True)) == [kept.pk]
    assert Mask.objects.filter(project=project).count() == 1
    assert not ImageLease.objects.exists()
    job = removed.job
    assert (job.kind, job.status, job.created_by) == ("remove_images", "queued", admin_user)
    assert job.params["image_ids"] == [first.pk, second.pk]
    assert store.exists(first.blob_key)  # the files go in the job

    removed_images_purge(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.result["blobs"] == {
        "deleted": 2, "kept": 0, "gone": 0, "restored": 0, "embeddings_deleted": 1,
    }  # fmt: skip
    assert (job.result["images"], job.result["masks"]) == (2, 5)
    assert not store.exists(first.blob_key)
    assert not store.exists(second.blob_key)
    assert not store.exists(gone_embedding)
    assert store.exists(kept.blob_key)
    assert store.exists(kept_embedding)
    assert removed_images_purge(job_id=job.pk) is None  # finished: a redelivery does nothing


def test_bytes_another_project_has_are_kept(project):
    other = Project.objects.create(name="dogs")
    mine, theirs = add_image(project, 40, 30, 5), add_image(other, 40, 30, 5)
    assert mine.blob_key == theirs.blob_key  # content-addressed: one file for both
    job = remove_and_purge(project, [mine.pk])
    assert job.result["blobs"]["kept"] == 1
    assert get_blob_store().exists(theirs.blob_key)
    assert Image.objects.filter(pk=theirs.pk).exists()


def test_a_rerun_after_a_crash_finishes_the_rest(project, monkeypatch):
    images = [add_image(project, 40, 30, seed) for seed in range(3)]
    removed = images_remove(project=project, image_ids=[i.pk for i in images], enqueue=False)
    real = image_removal.purge_image_blob
    calls = []

    def dies_on_the_second(sha: str, key: str) -> str:
        calls.append(sha)
        if len(calls) == 2:
            raise RuntimeError("worker killed")
        return real(sha, key)

    monkeypatch.setattr(image_removal, "purge_image_blob", dies_on_the_second)
    with pytest.raises(RuntimeError):
        removed_images_purge(job_id=removed.job.pk)
    monkeypatch.setattr(image_removal, "purge_image_blob", real)
    removed_images_purge(job_id=removed.job.pk)  # job recovery sends the task again
    removed.job.refresh_from_db()
    assert removed.job.result["blobs"]["deleted"] + removed.job.result["blobs"]["gone"] == 3
    assert not any(get_blob_store().exists(image.blob_key) for image in images)


def test_the_validation_split_loses_the_removed_images(project):
    images = [add_image(project, 40, 30, seed) for seed in range(3)]
    split = ValidationSplit.objects.create(
        project=project, image_ids=[images[0].pk, images[2].pk], seed=1
    )
    job = images_remove(project=project, image_ids=[images[0].pk], enqueue=False).job
    split.refresh_from_db()
    assert split.image_ids == [images[2].pk]
    assert job.result["validation_images_removed"] == 1


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "non-empty list"),
        ("1,2", "non-empty list"),
        ([1, "2"], "integers from 1"),
        ([True], "integers from 1"),
        ([0], "integers from 1"),
        ([2**63], "integers from 1"),
        (list(range(1, 10_002)), "at most 10000"),
    ],
)
def test_malformed_id_lists_are_refused(project, ids, message):
    image = add_image(project, 40, 30, 1)
    with pytest.raises(RemovalRefused, match=message):
        images_remove(project=project, image_ids=ids)
    assert Image.objects.filter(pk=image.pk).exists()
    assert not Job.objects.exists()


def test_an_image_of_another_project_removes_nothing(project):
    other = Project.objects.create(name="dogs")
    mine, theirs = add_image(project, 40, 30, 1), add_image(other, 40, 30, 2)
    with pytest.raises(ImagesNotFound, match=str(theirs.pk)) as refused:
        images_remove(project=project, image_ids=[mine.pk, theirs.pk, 999_999])
    assert refused.value.extra["missing"] == [theirs.pk, 999_999]
    assert Image.objects.count() == 2
    assert not Job.objects.exists()


@pytest.mark.parametrize("kind", ["train", "automatic", "prefill", "export", "import_masks"])
def test_refused_while_a_job_reads_the_images(project, kind):
    image = add_image(project, 40, 30, 1)
    with_masks(image, 1)
    busy = job_create(kind=kind, project=project)
    with pytest.raises(ConflictError, match=f"#{busy.pk}"):
        images_remove(project=project, image_ids=[image.pk])
    assert Mask.objects.count() == 1
    assert Job.objects.count() == 1
    job_start(job_id=busy.pk)
    Job.objects.filter(pk=busy.pk).update(status="succeeded", finished_at=timezone.now())
    assert images_remove(project=project, image_ids=[image.pk], enqueue=False).images == 1


def test_an_embedding_job_does_not_block_a_removal(project):
    image = add_image(project, 40, 30, 1)
    job_create(kind="embed", project=project)
    assert images_remove(project=project, image_ids=[image.pk], enqueue=False).images == 1


# --- the purge beside an import of the same bytes ---------------------------------------------


def test_the_purge_puts_back_bytes_imported_while_it_deleted_them(project, monkeypatch):
    """The import's row lands between the purge's check and its delete."""
    other = Project.objects.create(name="dogs")
    image = add_image(project, 40, 30, 1)
    removed = images_remove(project=project, image_ids=[image.pk], enqueue=False)
    store = type(get_blob_store())
    real_delete = store.delete

    def delete_then_import(self, key: str) -> None:
        real_delete(self, key)
        Image.objects.create(
            project=other, blob_key=image.blob_key, sha256=image.sha256, width=40, height=30,
            format="PNG", byte_size=image.byte_size,
        )  # fmt: skip

    monkeypatch.setattr(store, "delete", delete_then_import)
    removed_images_purge(job_id=removed.job.pk)
    removed.job.refresh_from_db()
    assert removed.job.result["blobs"]["restored"] == 1
    assert get_blob_store().exists(image.blob_key)


def test_an_import_beside_a_removal_stores_a_deleted_blob_again(project):
    other = Project.objects.create(name="dogs")
    data = png(9)
    outcome = image_ingest(project=other, data=data, file_name="a.png")
    assert outcome.image is not None
    key = outcome.image.blob_key
    get_blob_store().delete(key)  # as a purge that ran between the import's check and commit
    since = timezone.now() - dt.timedelta(seconds=1)
    assert image_blobs_restore(keys={key: lambda: data}, since=since) == []  # no removal: no look
    job_create(kind="remove_images", project=project)
    assert image_blobs_restore(keys={key: lambda: data}, since=since) == [key]
    assert get_blob_store().get_bytes(key) == data


def test_an_upload_restores_its_blob_after_commit_when_a_removal_is_pending(
    project, monkeypatch, django_capture_on_commit_callbacks
):
    job_create(kind="remove_images", project=project)
    puts = first_put_lost(monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = image_ingest(project=project, data=png(4), file_name="b.png")
    assert outcome.image is not None
    assert puts == [outcome.image.blob_key] * 2  # stored, then stored again after commit
    assert get_blob_store().exists(outcome.image.blob_key)


# --- the command ---------------------------------------------------------------------------------


def test_the_command_lists_without_yes_and_removes_with_it(project):
    first, second = add_image(project, 40, 30, 1), add_image(project, 40, 30, 2)
    with_masks(first, 2)
    out = StringIO()
    call_command("remove_images", "cats", str(first.pk), "--file-name", "photo_2.png", stdout=out)
    assert "would remove 2 images and 2 masks" in out.getvalue()
    assert Image.objects.count() == 2
    out = StringIO()
    call_command(
        "remove_images", "cats", str(first.pk), "--file-name", "photo_2.png", "--yes",
        "--no-progress", stdout=out,
    )  # fmt: skip
    assert "removed 2 images and 2 masks" in out.getvalue()
    assert "deleted 2 image files" in out.getvalue()
    assert not Image.objects.exists()
    assert Job.objects.get(kind="remove_images").status == "succeeded"
    assert not get_blob_store().exists(second.blob_key)


def test_the_command_refuses_unknown_names_and_foreign_ids(project):
    image = add_image(project, 40, 30, 1)
    with pytest.raises(CommandError, match="no image"):
        call_command("remove_images", "cats", "--file-name", "nope.png", "--yes")
    with pytest.raises(CommandError, match="not images"):
        call_command("remove_images", "cats", str(image.pk + 100), "--yes")
    with pytest.raises(CommandError, match="give image ids"):
        call_command("remove_images", "cats")
    assert Image.objects.count() == 1
    assert not Job.objects.exists()


def test_a_folder_import_beside_a_removal_reads_a_deleted_file_again(
    project, monkeypatch, tmp_path
):
    from annotation.services.ingest import images_import

    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "c.png").write_bytes(png(6))
    job_create(kind="remove_images", project=project)
    puts = first_put_lost(monkeypatch)
    summary = images_import(project=project, source=str(folder))
    assert summary.as_dict()["imported"] == 1
    image = Image.objects.get(project=project)
    assert puts == [image.blob_key] * 2
    assert get_blob_store().get_bytes(image.blob_key) == png(6)
