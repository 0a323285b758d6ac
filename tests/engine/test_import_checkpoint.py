"""``manage.py import_checkpoint``: registers a version, or fails with a clear CommandError."""

import io

import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError

from engine.models import ModelVersion
from engine.sam.checkpoint import file_sha256
from storage.blobs import get_blob_store

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("import_checkpoint", *args, stdout=out)
    return out.getvalue()


def test_the_command_imports_and_deploys_a_checkpoint(project, golden_path):
    output = run(project.name, str(golden_path), "--arch", "vit_tiny", "--name", "base", "--deploy")
    version = ModelVersion.objects.get()
    project.refresh_from_db()
    assert project.deployed_version_id == version.pk
    assert (version.name, version.arch, version.sha256) == (
        "base",
        "vit_tiny",
        file_sha256(golden_path),
    )
    assert f"model version {version.pk}: vit_tiny sha256 {version.sha256}" in output
    assert "(deployed)" in output
    assert get_blob_store().exists(version.onnx_decoder_key)


def test_the_project_may_be_given_by_id(project, golden_path):
    run(str(project.pk), str(golden_path))
    assert ModelVersion.objects.get().project_id == project.pk


def test_an_unknown_project_is_a_command_error(db, golden_path):
    with pytest.raises(CommandError, match="unknown project 'nope'"):
        run("nope", str(golden_path))


def test_a_missing_file_is_a_command_error(project, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        run(project.name, str(tmp_path / "absent.pth"))


def test_a_wrong_arch_is_a_command_error_naming_both(project, golden_path):
    with pytest.raises(CommandError, match="checkpoint is vit_tiny, not vit_h"):
        run(project.name, str(golden_path), "--arch", "vit_h")
    assert not ModelVersion.objects.exists()


def test_a_file_that_is_not_a_checkpoint_is_a_command_error(project, tmp_path):
    path = tmp_path / "readme.txt"
    path.write_text("hello")
    with pytest.raises(CommandError, match=r"readme\.txt: not a checkpoint"):
        run(project.name, str(path))
    assert list(get_blob_store().list()) == []


def test_nan_weights_are_a_command_error_that_registers_and_stores_nothing(
    project, golden_path, tmp_path
):
    state = torch.load(golden_path, weights_only=True)
    state["mask_decoder.iou_token.weight"][0, 0] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(CommandError) as caught:
        run(project.name, str(path))
    assert str(caught.value) == (
        "diverged.pth: non-finite weights (NaN or infinity) in mask_decoder.iou_token.weight "
        "(1 of 64 values)"
    )
    assert not ModelVersion.objects.exists()
    assert list(get_blob_store().list()) == []


def test_a_wrong_arch_on_a_reimport_is_a_command_error(project, golden_path):
    run(project.name, str(golden_path))
    with pytest.raises(CommandError, match="checkpoint is vit_tiny, not vit_h"):
        run(project.name, str(golden_path), "--arch", "vit_h")
    assert ModelVersion.objects.count() == 1
