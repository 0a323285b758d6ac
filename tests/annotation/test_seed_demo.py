"""``manage.py seed_demo``: an admin, a demo project of synthetic scenes and its seed model."""

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from PIL import Image as PilImage
from pycocotools import mask as mask_utils

from annotation.management.commands.seed_demo import (
    DEMO_IMAGES,
    SEED_NAME,
    demo_domain,
    demo_image,
    demo_labelled,
    demo_scene_args,
)
from annotation.models import Image, Mask, Project
from engine.models import Job, ModelVersion
from engine.services.embeddings import embeddings_precompute_run
from engine.services.registry import model_version_deploy
from storage.blobs import get_blob_store
from training.loop.scenes import generate_scene

pytestmark = pytest.mark.django_db

GOLDEN_CHECKPOINT = Path("tests/engine/sam/goldens/tiny_sam.pth")
LOGIN_LINE = re.compile(r"Log in at http://127\.0\.0\.1:8000/ as (\S+) / (\S+)")


def credentials(output: str) -> tuple[str, str]:
    found = LOGIN_LINE.search(output)
    assert found is not None, output
    return found.group(1), found.group(2)


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    return tmp_path / "var"


@pytest.fixture
def no_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint path that does not exist (the default one may, once the seed is committed)."""
    return tmp_path / "missing" / "seed.pth"


def seed(var_dir: Path, checkpoint: Path, images: int = 4) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with override_settings(VAR_DIR=var_dir):
        call_command(
            "seed_demo",
            "--images",
            str(images),
            "--checkpoint",
            str(checkpoint),
            stdout=out,
            stderr=err,
        )
    return out.getvalue(), err.getvalue()


def counts() -> tuple[int, ...]:
    return (
        User.objects.count(),
        Project.objects.count(),
        Image.objects.count(),
        Mask.objects.count(),
        ModelVersion.objects.count(),
        Job.objects.count(),
    )


# --- images and masks ----------------------------------------------------------------------------


def test_the_demo_is_mostly_domain_a_with_half_of_each_domain_left_to_annotate():
    domains = [demo_domain(index) for index in range(DEMO_IMAGES)]
    labelled = [demo_labelled(index) for index in range(DEMO_IMAGES)]
    assert domains.count("A") >= 18
    assert domains.count("B") >= 3
    assert labelled.count(True) == DEMO_IMAGES // 2
    pairs = set(zip(domains, labelled, strict=True))
    assert pairs == {("A", True), ("A", False), ("B", True), ("B", False)}


def test_seeding_creates_an_admin_whose_printed_password_works(var_dir, no_checkpoint):
    out, _ = seed(var_dir, no_checkpoint, images=0)
    username, password = credentials(out)
    user = User.objects.get(username=username)
    assert user.is_superuser
    assert user.check_password(password)
    assert (var_dir / "demo-admin.txt").read_text().split() == [username, password]


def test_half_of_the_images_carry_accepted_manual_masks_the_rest_stay_todo(var_dir, no_checkpoint):
    seed(var_dir, no_checkpoint)
    project = Project.objects.get(name="demo")
    assert project.memberships.get().role == "admin"
    images = list(project.images.order_by("id"))
    assert [image.file_name for image in images] == [demo_image(i).file_name for i in range(4)]
    for index, image in enumerate(images):
        masks = Mask.objects.filter(image=image)
        if demo_labelled(index):
            assert image.status == "done"
            assert masks.count() == len(demo_image(index).masks) >= 3
            assert set(masks.values_list("status", "source")) == {("accepted", "manual")}
            # Ground truth, not the admin's work: no annotator, so no one's stats count it.
            assert set(masks.values_list("annotator", flat=True)) == {None}
        else:
            assert image.status == "todo"
            assert masks.count() == 0
    assert {image.format for image in images} == {"JPEG", "PNG"}
    assert len({(image.width, image.height) for image in images}) >= 2


def test_each_stored_mask_is_the_exact_visible_region_of_its_scene_object(var_dir, no_checkpoint):
    seed(var_dir, no_checkpoint)
    for index in (0, 2):
        expected = generate_scene(*demo_scene_args(index))
        image = Image.objects.get(file_name=demo_image(index).file_name)
        stored = [
            mask_utils.decode(m.rle).astype(bool)
            for m in Mask.objects.filter(image=image).order_by("id")
        ]
        assert len(stored) == len(expected.masks)
        for got, want in zip(stored, expected.masks, strict=True):
            assert np.array_equal(got, want)
        assert (image.height, image.width) == expected.size


def test_a_png_demo_image_holds_the_scene_pixels_exactly(var_dir, no_checkpoint):
    seed(var_dir, no_checkpoint)
    scene = generate_scene(*demo_scene_args(3))
    image = Image.objects.get(file_name=demo_image(3).file_name)
    assert (scene.domain, image.format) == ("B", "PNG")
    stored = PilImage.open(io.BytesIO(get_blob_store().get_bytes(image.blob_key)))
    assert np.array_equal(np.asarray(stored.convert("RGB")), scene.image)


def test_running_it_twice_creates_nothing_new_and_prints_the_same_credentials(
    var_dir, no_checkpoint
):
    first, _ = seed(var_dir, no_checkpoint)
    before = counts()
    second, _ = seed(var_dir, no_checkpoint)
    assert counts() == before
    assert credentials(first) == credentials(second)
    assert "(0 new, 2 to do)" in second
    assert "masks (0 new)" in second


def test_a_rerun_completes_an_image_that_an_interrupted_run_left_half_done(var_dir, no_checkpoint):
    seed(var_dir, no_checkpoint)
    image = Image.objects.get(file_name=demo_image(2).file_name)
    expected = Mask.objects.filter(image=image).count()
    # As if the run had stopped after the image and its first mask.
    first = Mask.objects.filter(image=image).order_by("id")[0]
    Mask.objects.filter(image=image).exclude(pk=first.pk).delete()
    Image.objects.filter(pk=image.pk).update(status="todo")
    out, _ = seed(var_dir, no_checkpoint)
    image.refresh_from_db()
    assert image.status == "done"
    assert Mask.objects.filter(image=image).count() == expected
    assert f"masks ({expected - 1} new)" in out
    assert Image.objects.count() == 4


def test_the_generated_images_are_the_same_bytes_every_time():
    uncached = demo_image.__wrapped__
    assert uncached(1).data == demo_image(1).data
    assert demo_image(1).data != demo_image(2).data


def test_a_negative_image_count_is_refused_and_creates_nothing(var_dir, no_checkpoint):
    with pytest.raises(CommandError, match="non-negative"):
        seed(var_dir, no_checkpoint, images=-1)
    assert counts() == (0, 0, 0, 0, 0, 0)


# --- the seed model ------------------------------------------------------------------------------


def test_the_checkpoint_is_imported_deployed_and_its_embeddings_queued_once(var_dir):
    out, _ = seed(var_dir, GOLDEN_CHECKPOINT, images=1)
    project = Project.objects.get(name="demo")
    version = ModelVersion.objects.get(project=project)
    assert (version.name, version.arch) == (SEED_NAME, "vit_tiny")
    assert project.deployed_version_id == version.pk
    assert "deployed: clicks in the annotation tool give masks" in out
    job = Job.objects.get(project=project, kind="embed")
    assert job.params["model_version_id"] == version.pk
    assert "1 missing, queued as job" in out

    before = counts()
    again, _ = seed(var_dir, GOLDEN_CHECKPOINT, images=1)
    assert counts() == before
    assert f"is model version {version.pk} already" in again
    assert f"job {job.pk} is queued" in again

    embeddings_precompute_run(job_id=job.pk)  # what the worker does with the queued job
    third, _ = seed(var_dir, GOLDEN_CHECKPOINT, images=1)
    assert counts() == before
    assert "all stored" in third


def test_a_rerun_never_redeploys_the_seed_over_a_promoted_version(var_dir, no_checkpoint):
    seed(var_dir, no_checkpoint, images=0)
    project = Project.objects.get(name="demo")
    # The seed as an earlier run imported it (a row, not a second ONNX export) and round 1
    # trained from it, promoted since.
    sha256 = hashlib.sha256(GOLDEN_CHECKPOINT.read_bytes()).hexdigest()
    seed_version = ModelVersion.objects.create(
        project=project, name=SEED_NAME, arch="vit_tiny", checkpoint_key="k", sha256=sha256
    )
    promoted = ModelVersion.objects.create(
        project=project,
        name="round 1",
        arch="vit_tiny",
        checkpoint_key="k1",
        sha256="1" * 64,
        parent=seed_version,
        round=1,
    )
    model_version_deploy(project=project, version=promoted)
    out, _ = seed(var_dir, GOLDEN_CHECKPOINT, images=0)
    project.refresh_from_db()
    assert project.deployed_version_id == promoted.pk
    assert ModelVersion.objects.count() == 2
    assert f"is model version {seed_version.pk} already, not deployed" in out
    assert f"(the project serves version {promoted.pk})" in out


def test_a_missing_checkpoint_says_how_to_import_one_and_creates_no_version(var_dir, no_checkpoint):
    out, _ = seed(var_dir, no_checkpoint, images=1)
    assert f"No seed model: {no_checkpoint} does not exist" in out
    assert "python manage.py import_checkpoint demo" in out
    assert "--deploy" in out
    assert ModelVersion.objects.count() == 0
    assert Job.objects.count() == 0
    assert Project.objects.get(name="demo").images.count() == 1


def test_a_file_that_is_not_a_checkpoint_is_reported_and_the_demo_goes_on(var_dir, tmp_path):
    bogus = tmp_path / "seed.pth"
    bogus.write_bytes(b"not a checkpoint at all")
    out, err = seed(var_dir, bogus, images=1)
    assert f"The seed model {bogus} was not imported" in err
    assert ModelVersion.objects.count() == 0
    assert Project.objects.get(name="demo").deployed_version is None
    assert Project.objects.get(name="demo").images.count() == 1
    credentials(out)
