"""Model registry: a checkpoint becomes a stored, verified version; bad files change nothing."""

import dataclasses
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from annotation.models import Project
from engine.models import ModelVersion
from engine.sam.build import build_sam_from_config
from engine.sam.checkpoint import file_sha256, sam_from_state_dict, save_sam
from engine.sam.config import VIT_TINY
from engine.services.registry import (
    CheckpointRejected,
    DeployRefused,
    model_version_deploy,
    model_version_import,
)
from storage.blobs import get_blob_store

pytestmark = pytest.mark.django_db


class Payload:
    """Unpickling this would touch a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.marker.touch, ())


def golden_state(golden_path: Path) -> dict[str, torch.Tensor]:
    return torch.load(golden_path, map_location="cpu", weights_only=True)


def assert_nothing_stored() -> None:
    assert not ModelVersion.objects.exists()
    assert list(get_blob_store().list()) == []


def rejected_message(project: Project, path: Path, **kwargs: object) -> str:
    with pytest.raises(CheckpointRejected) as caught:
        model_version_import(project=project, path_or_file=path, **kwargs)  # type: ignore[arg-type]
    assert_nothing_stored()
    return caught.value.message


def test_an_official_layout_checkpoint_is_stored_registered_and_its_onnx_decoder_verified(
    project, golden_path
):
    version = model_version_import(project=project, path_or_file=golden_path)
    sha256 = file_sha256(golden_path)
    store = get_blob_store()
    assert (version.arch, version.sha256, version.name) == ("vit_tiny", sha256, golden_path.name)
    assert version.checkpoint_key == f"checkpoints/{sha256}.pth"
    assert store.get_bytes(version.checkpoint_key) == golden_path.read_bytes()
    assert version.onnx_decoder_key == f"onnx/{sha256}.onnx"
    assert store.get_bytes(version.onnx_decoder_key)[:4] != b""  # an ONNX protobuf is stored
    onnx = version.metrics["onnx_decoder"]
    assert onnx["max_abs_diff_iou"] < 1e-4
    assert onnx["max_abs_diff_low_res_logits"] < 1e-3
    assert onnx["mask_pixels_differing"] < 1e-3
    assert version.config["encoder_embed_dim"] == 64
    project.refresh_from_db()
    assert project.deployed_version is None


def test_the_same_file_twice_returns_the_first_version(project, golden_path):
    first = model_version_import(project=project, path_or_file=golden_path)
    with golden_path.open("rb") as handle:
        second = model_version_import(project=project, path_or_file=handle, deploy=True)
    assert second.pk == first.pk
    assert ModelVersion.objects.count() == 1
    project.refresh_from_db()
    assert project.deployed_version_id == first.pk


def test_import_with_deploy_sets_the_projects_deployed_version(project, golden_path):
    version = model_version_import(project=project, path_or_file=golden_path, deploy=True)
    project.refresh_from_db()
    assert project.deployed_version_id == version.pk


def test_a_text_file_is_rejected_as_not_a_checkpoint(project, tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    assert "notes.pth: not a checkpoint" in rejected_message(project, path)


def test_a_truncated_checkpoint_is_rejected(project, golden_path, tmp_path):
    path = tmp_path / "cut.pth"
    path.write_bytes(golden_path.read_bytes()[:50_000])
    assert "cut.pth: truncated or corrupt checkpoint" in rejected_message(project, path)


def test_a_pickle_that_would_run_code_is_refused_and_never_executed(project, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": Payload(marker)}, path)
    message = rejected_message(project, path)
    assert "evil.pth: refused, the pickle would run code" in message
    assert not marker.exists()


def test_a_legacy_pickle_that_would_run_code_is_refused_and_never_executed(project, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_legacy.pth"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    assert "refused" in rejected_message(project, path)
    assert not marker.exists()


def test_a_shell_command_pickle_is_refused_as_such_and_never_executed(project, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_system.pth"
    torch.save({"x": ShellPayload(f"touch {marker}")}, path)
    message = rejected_message(project, path)
    assert message.startswith("evil_system.pth: refused, the pickle would run code")
    assert f"(unsupported GLOBAL {os.system.__module__}.system whose module" in message
    assert not marker.exists()


class ShellPayload:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (os.system, (self.command,))


def test_a_damaged_tensor_is_rejected_naming_its_zip_member(project, golden_path, tmp_path):
    path = tmp_path / "damaged.pth"
    data = bytearray(golden_path.read_bytes())
    with zipfile.ZipFile(golden_path) as archive:
        info = max(archive.infolist(), key=lambda member: member.file_size)
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
    data[start : start + 16] = bytes(byte ^ 0xFF for byte in data[start : start + 16])
    path.write_bytes(bytes(data))
    assert rejected_message(project, path) == (
        f"damaged.pth: truncated or corrupt checkpoint (damaged zip member {info.filename}: "
        "its bytes do not match the CRC-32 the zip records)"
    )


def ours_from_golden(golden_path: Path, path: Path, *, arch: str) -> Path:
    sam = sam_from_state_dict(golden_state(golden_path), VIT_TINY)
    save_sam(sam, path, arch=arch, config=VIT_TINY)
    return path


def test_our_format_labelled_vit_h_with_vit_tiny_weights_is_rejected(
    project, golden_path, tmp_path
):
    path = ours_from_golden(golden_path, tmp_path / "lie.pth", arch="vit_h")
    assert rejected_message(project, path, arch="vit_h") == (
        "lie.pth: labelled vit_h but its weights are vit_tiny's (encoder width 64, depth 2)"
    )


def test_our_format_with_an_unknown_label_is_rejected(project, golden_path, tmp_path):
    path = ours_from_golden(golden_path, tmp_path / "banana.pth", arch="banana")
    assert "banana.pth: labelled 'banana', which is not a known architecture" in (
        rejected_message(project, path)
    )


def test_a_wider_encoder_labelled_vit_tiny_is_imported_under_that_label(project, tmp_path):
    """A ``train_cli --arch vit_tiny --set encoder_embed_dim=128`` model: no known size, so its
    label names the architecture it derives from."""
    config = dataclasses.replace(VIT_TINY, encoder_embed_dim=128)
    torch.manual_seed(0)
    path = tmp_path / "wide.pth"
    save_sam(build_sam_from_config(config), path, arch="vit_tiny", config=config)
    version = model_version_import(project=project, path_or_file=path, arch="vit_tiny")
    assert (version.arch, version.config["encoder_embed_dim"]) == ("vit_tiny", 128)


def test_a_reimport_with_a_wrong_arch_is_rejected_like_the_first(project, golden_path):
    first = model_version_import(project=project, path_or_file=golden_path)
    with pytest.raises(CheckpointRejected) as caught:
        model_version_import(project=project, path_or_file=golden_path, arch="vit_b")
    assert caught.value.message == f"{golden_path.name}: checkpoint is vit_tiny, not vit_b"
    again = model_version_import(project=project, path_or_file=golden_path, arch="vit_tiny")
    assert again.pk == first.pk
    assert ModelVersion.objects.count() == 1


def test_nan_weights_are_rejected_naming_the_tensor(project, golden_path, tmp_path):
    state = golden_state(golden_path)
    state["mask_decoder.iou_token.weight"][0, :5] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    assert rejected_message(project, path) == (
        "nan.pth: non-finite weights (NaN or infinity) in mask_decoder.iou_token.weight "
        "(5 of 64 values)"
    )


def test_finite_weights_that_overflow_the_decoder_are_rejected(project, golden_path, tmp_path):
    state = golden_state(golden_path)
    key = "mask_decoder.output_upscaling.0.weight"
    state[key] = torch.full(state[key].shape, 3e38)  # finite in float32; the products are not
    path = tmp_path / "huge.pth"
    torch.save(state, path)
    message = rejected_message(project, path)
    assert message.startswith("huge.pth: the mask decoder gives unusable outputs")


def test_a_missing_key_is_listed(project, golden_path, tmp_path):
    state = golden_state(golden_path)
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    message = rejected_message(project, path)
    assert "missing keys [mask_decoder.iou_token.weight]" in message


def test_an_unexpected_key_is_listed(project, golden_path, tmp_path):
    state = golden_state(golden_path)
    state["mask_decoder.extra.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    assert "unexpected keys [mask_decoder.extra.weight]" in rejected_message(project, path)


def test_a_shape_mismatch_names_the_tensor(project, golden_path, tmp_path):
    state = golden_state(golden_path)
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 32)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    message = rejected_message(project, path)
    assert "shape mismatch: mask_decoder.iou_token.weight: checkpoint (1, 32) vs model (1, 64)" in (
        message
    )


def test_a_wrong_arch_is_rejected_with_the_detected_one(project, golden_path):
    message = rejected_message(project, golden_path, arch="vit_b")
    assert message == f"{golden_path.name}: checkpoint is vit_tiny, not vit_b"


def test_an_unknown_arch_is_rejected(project, golden_path):
    assert "unknown architecture 'vit_q'" in rejected_message(project, golden_path, arch="vit_q")


def test_a_file_over_the_size_limit_is_rejected_before_reading_it(project, golden_path, settings):
    settings.MASKLOOP_MAX_CHECKPOINT_BYTES = 1000
    assert "larger than the 1000 byte limit" in rejected_message(project, golden_path)


def test_a_failure_after_storing_removes_the_blobs_and_leaves_no_row(
    project, golden_path, monkeypatch
):
    def broken_register(**kwargs: object) -> ModelVersion:
        raise RuntimeError("database went away")

    monkeypatch.setattr("engine.services.registry._register", broken_register)
    with pytest.raises(RuntimeError, match="database went away"):
        model_version_import(project=project, path_or_file=golden_path)
    assert_nothing_stored()


def test_an_upload_file_object_is_imported_under_its_name(project, golden_path):
    upload = io.BytesIO(golden_path.read_bytes())
    upload.name = "uploaded_sam.pth"
    version = model_version_import(project=project, path_or_file=upload, name="round 0")
    assert version.name == "round 0"
    assert version.sha256 == file_sha256(golden_path)


def test_deploy_refuses_a_version_of_another_project(project, tiny_version):
    other = Project.objects.create(name="other")
    with pytest.raises(DeployRefused, match="does not belong"):
        model_version_deploy(project=other, version=tiny_version)
    other.refresh_from_db()
    assert other.deployed_version is None


def test_deploy_refuses_a_retired_version(project, tiny_version):
    tiny_version.status = ModelVersion.Status.RETIRED
    tiny_version.save()
    with pytest.raises(DeployRefused, match="retired"):
        model_version_deploy(project=project, version=tiny_version)
    project.refresh_from_db()
    assert project.deployed_version is None


def test_deploy_switches_the_projects_version(project, tiny_version):
    model_version_deploy(project=project, version=tiny_version)
    project.refresh_from_db()
    assert project.deployed_version_id == tiny_version.pk
