"""Builders and the registry produce the official architectures, key for key."""

import json
from pathlib import Path

import pytest
import torch

from engine.sam.build import build_sam, build_sam_from_config, sam_model_registry
from engine.sam.config import CONFIGS, VIT_B, SamConfig

GOLDENS = Path(__file__).parent / "goldens"


def official_shapes(arch: str) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = json.loads((GOLDENS / "official_keys.json").read_text())[arch]
    return shapes


def test_registry_vit_b_has_the_official_keys_and_shapes_in_order() -> None:
    sam = sam_model_registry["vit_b"]()
    ours = {key: list(t.shape) for key, t in sam.state_dict().items()}
    assert list(ours) == list(official_shapes("vit_b"))
    assert ours == official_shapes("vit_b")
    assert sum(p.numel() for p in sam.parameters()) == pytest.approx(93.7e6, rel=0.01)


@pytest.mark.parametrize("arch", ["vit_l", "vit_h"])
def test_large_configs_have_the_official_keys_and_shapes(arch: str) -> None:
    sam = build_sam_from_config(CONFIGS[arch], device="meta")
    ours = {key: list(t.shape) for key, t in sam.state_dict().items()}
    assert ours == official_shapes(arch)


def test_default_is_vit_h_as_upstream() -> None:
    assert sam_model_registry["default"] is sam_model_registry["vit_h"]
    assert set(sam_model_registry) == {"default", "vit_h", "vit_l", "vit_b", "vit_tiny"}


def test_pixel_statistics_are_buffers_outside_the_state_dict() -> None:
    sam = build_sam("vit_tiny")
    assert "pixel_mean" in dict(sam.named_buffers())
    assert not any("pixel" in key for key in sam.state_dict())


def test_built_models_are_in_eval_mode() -> None:
    assert not build_sam("vit_tiny").training


def test_an_unknown_arch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown SAM architecture 'vit_q'"):
        build_sam("vit_q")


def test_config_round_trips_through_a_plain_dict() -> None:
    assert SamConfig.from_dict(VIT_B.to_dict()) == VIT_B


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image_size": 1000}, "not a multiple of patch_size"),
        ({"encoder_num_heads": 5}, "not divisible by encoder_num_heads 5"),
        ({"encoder_global_attn_indexes": (12,)}, r"indexes \[12\] outside depth 12"),
    ],
)
def test_inconsistent_configs_are_rejected(changes: dict[str, object], message: str) -> None:
    values = VIT_B.to_dict() | changes
    with pytest.raises(ValueError, match=message):
        SamConfig.from_dict(values)


def test_unknown_config_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown SamConfig fields"):
        SamConfig.from_dict(VIT_B.to_dict() | {"dropout": 0.1})


def test_tiny_model_produces_official_shapes() -> None:
    torch.manual_seed(0)
    sam = build_sam("vit_tiny")
    with torch.no_grad():
        embedding = sam.image_encoder(torch.zeros(1, 3, 1024, 1024))
        sparse, dense = sam.prompt_encoder(
            points=(torch.tensor([[[10.0, 20.0]]]), torch.tensor([[1]])), boxes=None, masks=None
        )
        masks, iou = sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
    assert embedding.shape == (1, 64, 64, 64)
    assert sparse.shape == (1, 2, 64)  # the point and the padding point
    assert dense.shape == (1, 64, 64, 64)
    assert masks.shape == (1, 3, 256, 256)
    assert iou.shape == (1, 3)
