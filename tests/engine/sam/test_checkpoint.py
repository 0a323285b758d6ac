"""Checkpoint io: official layout loads unchanged; every kind of bad file is a CheckpointError."""

import dataclasses
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.sam.build import build_sam, build_sam_from_config
from engine.sam.checkpoint import (
    OUR_FORMAT,
    CheckpointError,
    check_state_dict,
    detect_arch,
    file_sha256,
    load_sam,
    read_checkpoint,
    save_sam,
)
from engine.sam.config import CONFIGS, VIT_TINY
from engine.sam.modeling import Sam

GOLDENS = Path(__file__).parent / "goldens"


def official_layout(arch: str) -> dict[str, torch.Tensor]:
    """A state dict in the official key layout (from the reference package), on meta."""
    shapes = json.loads((GOLDENS / "official_keys.json").read_text())[arch]
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


@pytest.fixture
def tiny_path(tmp_path: Path, tiny_sam: Sam) -> Path:
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(tiny_sam.state_dict(), path)
    return path


class Payload:
    """Unpickling this would touch a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.marker.touch, ())


def test_official_state_dict_loads_strictly_with_identical_weights(
    tiny_path: Path, tiny_sam: Sam
) -> None:
    loaded = load_sam(tiny_path)
    for (key, ours), (ref_key, ref) in zip(
        loaded.state_dict().items(), tiny_sam.state_dict().items(), strict=True
    ):
        assert key == ref_key
        assert torch.equal(ours, ref)
    assert loaded.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])
    assert not loaded.training


def test_build_sam_with_checkpoint_matches_load_sam(tiny_path: Path, tiny_sam: Sam) -> None:
    built = build_sam("vit_tiny", checkpoint=tiny_path)
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(built.state_dict()[key], tiny_sam.state_dict()[key])


@pytest.mark.parametrize("arch", ["vit_b", "vit_l", "vit_h"])
def test_official_layouts_are_detected_and_match_our_architecture(arch: str) -> None:
    state_dict = official_layout(arch)
    assert detect_arch(state_dict) == arch
    check_state_dict(state_dict, CONFIGS[arch])  # raises on any key or shape difference


def test_golden_checkpoint_is_detected_as_vit_tiny() -> None:
    loaded = read_checkpoint(GOLDENS / "tiny_sam.pth")
    assert (loaded.arch, loaded.is_official) == ("vit_tiny", True)


def test_a_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("definitely not weights\n")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_sam(path)


def test_a_zip_that_is_not_a_torch_archive_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "photos.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("photo.txt", "not weights")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_sam(path)


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_sam(tmp_path / "absent.pth")


def test_a_truncated_file_is_reported(tiny_path: Path, tmp_path: Path) -> None:
    data = tiny_path.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_sam(truncated)


def test_a_truncated_legacy_pickle_is_reported(tiny_sam: Sam, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save(tiny_sam.state_dict(), path, _use_new_zipfile_serialization=False)
    assert load_sam(path).state_dict().keys() == tiny_sam.state_dict().keys()
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_sam(path)


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(
    tmp_path: Path, zipfile_format: bool
) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save(
        {"image_encoder.x": Payload(marker)}, path, _use_new_zipfile_serialization=zipfile_format
    )
    with pytest.raises(CheckpointError, match="refused"):
        load_sam(path)
    assert not marker.exists()
    # The payload is real: an unsafe load does run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_plain_pickle_of_something_else_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(CheckpointError, match=r"refused.*Unsupported global"):
        load_sam(path)
    assert not marker.exists()


def test_a_list_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_sam(path)


def test_missing_and_unexpected_keys_are_listed(tiny_sam: Sam, tmp_path: Path) -> None:
    state_dict = dict(tiny_sam.state_dict())
    del state_dict["mask_decoder.iou_token.weight"]
    state_dict["mask_decoder.extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "keys.pth"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError) as info:
        load_sam(path)
    message = str(info.value)
    assert "missing keys [mask_decoder.iou_token.weight]" in message
    assert "unexpected keys [mask_decoder.extra_head.weight]" in message


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(tiny_sam: Sam, tmp_path: Path) -> None:
    state_dict = dict(tiny_sam.state_dict())
    state_dict["mask_decoder.mask_tokens.weight"] = torch.zeros(5, 64)
    path = tmp_path / "shape.pth"
    torch.save(state_dict, path)
    with pytest.raises(
        CheckpointError, match=r"mask_tokens.weight: checkpoint \(5, 64\) vs model \(4, 64\)"
    ):
        load_sam(path)


def test_a_wrong_arch_is_reported(tiny_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint is vit_tiny, not vit_b"):
        load_sam(tiny_path, arch="vit_b")


def test_an_unknown_arch_name_is_reported(tiny_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unknown architecture 'vit_x'"):
        load_sam(tiny_path, arch="vit_x")


def test_an_unknown_encoder_size_is_reported(tiny_sam: Sam, tmp_path: Path) -> None:
    state_dict = {k: v for k, v in tiny_sam.state_dict().items() if ".blocks.1." not in k}
    path = tmp_path / "shallow.pth"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError, match="width 64 and depth 1"):
        load_sam(path)


def test_our_format_round_trips_with_config_and_sha256(tiny_sam: Sam, tmp_path: Path) -> None:
    path = tmp_path / "ours.pth"
    digest = save_sam(tiny_sam, path, arch="vit_tiny", config=VIT_TINY)
    assert digest == file_sha256(path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == OUR_FORMAT
    assert payload["config"]["encoder_global_attn_indexes"] == [1]
    loaded = read_checkpoint(path, expected_sha256=digest)
    assert (loaded.arch, loaded.config, loaded.is_official) == ("vit_tiny", VIT_TINY, False)
    model = load_sam(path, expected_sha256=digest.upper())
    key = "image_encoder.pos_embed"
    assert torch.equal(model.state_dict()[key], tiny_sam.state_dict()[key])


def test_our_format_with_a_wrong_sha256_is_refused(tiny_sam: Sam, tmp_path: Path) -> None:
    path = tmp_path / "ours.pth"
    save_sam(tiny_sam, path, arch="vit_tiny", config=VIT_TINY)
    copy = tmp_path / "copy.pth"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one weight byte changed; the file still parses
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the expected"):
        load_sam(copy, expected_sha256=file_sha256(path))
    with pytest.raises(CheckpointError, match="damaged zip member"):
        load_sam(copy)  # without a sha256 the zip's own checksums catch it


def test_our_format_with_a_wrong_arch_is_refused(tiny_sam: Sam, tmp_path: Path) -> None:
    path = tmp_path / "ours.pth"
    save_sam(tiny_sam, path, arch="vit_tiny", config=VIT_TINY)
    with pytest.raises(CheckpointError, match="checkpoint is vit_tiny, not vit_l"):
        load_sam(path, arch="vit_l")


@pytest.mark.parametrize("label", ["vit_h", "vit_b"])
def test_our_format_labelled_another_known_arch_than_its_weights_is_refused(
    tiny_sam: Sam, tmp_path: Path, label: str
) -> None:
    path = tmp_path / "ours.pth"
    save_sam(tiny_sam, path, arch=label, config=VIT_TINY)
    expected = (
        f"{path}: labelled {label} but its weights are vit_tiny's (encoder width 64, depth 2)"
    )
    for arch in (None, label):
        with pytest.raises(CheckpointError) as caught:
            read_checkpoint(path, arch=arch)
        assert str(caught.value) == expected


def test_our_format_with_an_unknown_label_is_refused(tiny_sam: Sam, tmp_path: Path) -> None:
    path = tmp_path / "ours.pth"
    save_sam(tiny_sam, path, arch="banana", config=VIT_TINY)
    with pytest.raises(CheckpointError, match="labelled 'banana', which is not a known arch"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    "change",
    [{"encoder_embed_dim": 128}, {"prompt_embed_dim": 256}],
    ids=["wider-encoder", "official-size-decoder"],
)
def test_our_format_of_no_known_size_keeps_its_label(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    """What `train_cli --arch vit_tiny --set ...` and the bench's trained decoder write."""
    config = dataclasses.replace(VIT_TINY, **change)
    path = tmp_path / "custom.pth"
    save_sam(build_sam_from_config(config), path, arch="vit_tiny", config=config)
    loaded = read_checkpoint(path, arch="vit_tiny")
    assert (loaded.arch, loaded.config, loaded.is_official) == ("vit_tiny", config, False)


def non_finite_state(tiny_sam: Sam) -> dict[str, torch.Tensor]:
    state = {key: value.clone() for key, value in tiny_sam.state_dict().items()}
    state["mask_decoder.iou_token.weight"][0, :3] = float("nan")
    state["image_encoder.pos_embed"].view(-1)[7] = float("-inf")
    return state


def test_non_finite_weights_are_refused_naming_each_tensor_and_count(
    tiny_sam: Sam, tmp_path: Path
) -> None:
    path = tmp_path / "diverged.pth"
    torch.save(non_finite_state(tiny_sam), path)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert str(caught.value) == (
        f"{path}: non-finite weights (NaN or infinity) in image_encoder.pos_embed "
        "(1 of 262144 values); mask_decoder.iou_token.weight (3 of 64 values)"
    )


def test_a_load_by_registered_sha256_does_not_scan_the_weights_again(
    tiny_sam: Sam, tmp_path: Path
) -> None:
    path = tmp_path / "registered.pth"
    torch.save(non_finite_state(tiny_sam), path)
    loaded = read_checkpoint(path, expected_sha256=file_sha256(path))
    assert torch.isnan(loaded.state_dict["mask_decoder.iou_token.weight"]).sum() == 3


def test_meta_build_allocates_no_weights() -> None:
    sam = build_sam_from_config(CONFIGS["vit_h"], device="meta")
    assert all(p.is_meta for p in sam.parameters())
    assert sum(p.numel() for p in sam.parameters()) > 600_000_000


def test_a_decoder_only_load_drops_the_encoder_and_decodes_the_same(golden_sam: Sam) -> None:
    """What web processes hold: no encoder weights, the same masks from a stored embedding."""
    from engine.sam.checkpoint import EncoderNotLoaded
    from engine.sam.predictor import SamPredictor
    from tests.engine.sam.conftest import GOLDENS

    light = load_sam(GOLDENS / "tiny_sam.pth", arch="vit_tiny", decoder_only=True)
    assert isinstance(light.image_encoder, EncoderNotLoaded)
    assert not any(key.startswith("image_encoder.") for key in light.state_dict())
    assert light.img_size == golden_sam.img_size
    embedding = torch.randn((1, 64, 64, 64), generator=torch.Generator().manual_seed(2))
    results = []
    for model in (golden_sam, light):
        predictor = SamPredictor(model)
        predictor.set_embedding(embedding, original_size=(120, 160))
        results.append(
            predictor.predict(point_coords=np.array([[40.0, 30.0]]), point_labels=np.array([1]))
        )
    assert np.array_equal(results[0][0], results[1][0])
    assert np.allclose(results[0][1], results[1][1], atol=1e-6)
    with pytest.raises(RuntimeError, match="decoder-only"):
        SamPredictor(light).set_image(np.zeros((32, 32, 3), dtype=np.uint8))
