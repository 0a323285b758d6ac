"""train_cli's ``--set``: architectures between the registered ones, kept through progressive
resolution (a later stage's ``--init``)."""

from pathlib import Path

import pytest

from engine.sam.checkpoint import read_checkpoint
from engine.sam.config import VIT_TINY
from training.loop.train_cli import _model, config_with, parse_args
from training.loop.train_cli import main as cli_main

WIDE_DECODER = ["--set", "prompt_embed_dim=96", "--set", "decoder_num_heads=8"]
SMALL_RUN = ["--scenes", "1", "--scene-size", "48", "64", "--steps", "1", "--iterations", "1"]
SMALL_RUN += ["--masks-per-image", "1", "--device", "cpu"]


def test_config_with_reads_each_field_as_its_type() -> None:
    config = config_with(
        VIT_TINY,
        ["prompt_embed_dim=256", "mlp_ratio=2.5", "encoder_global_attn_indexes=0,1"],
    )
    assert config.prompt_embed_dim == 256
    assert config.mlp_ratio == 2.5
    assert config.encoder_global_attn_indexes == (0, 1)
    assert config.encoder_embed_dim == VIT_TINY.encoder_embed_dim  # the rest is --arch's
    assert config_with(VIT_TINY, []) == VIT_TINY


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("prompt_dim=256", "FIELD one of"),
        ("prompt_embed_dim", "expected FIELD=VALUE"),
        ("prompt_embed_dim=wide", "prompt_embed_dim takes int"),
        ("encoder_global_attn_indexes=a,b", "comma-separated integers"),
    ],
)
def test_config_with_names_what_is_wrong(assignment: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_with(VIT_TINY, [assignment])


def test_bad_set_and_set_with_init_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "x.pth")]
    with pytest.raises(SystemExit) as exited:
        parse_args([*SMALL_RUN, *out, "--set", "heads=3"])
    assert exited.value.code == 2
    assert "--set 'heads=3'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([*SMALL_RUN, *out, *WIDE_DECODER, "--init", str(tmp_path / "a.pth")])
    assert "an --init checkpoint carries its configuration" in capsys.readouterr().err
    # The input size is checked against the patch size of the model being built.
    with pytest.raises(SystemExit):
        parse_args([*SMALL_RUN, *out, "--image-size", "72"])
    assert "multiple of 16, at least 64: 72" in capsys.readouterr().err
    assert parse_args([*SMALL_RUN, *out, "--set", "patch_size=8", "--image-size", "72"])
    with pytest.raises(SystemExit):
        parse_args([*SMALL_RUN, *out, "--set", "patch_size=8", "--image-size", "76"])
    assert "multiple of 8, at least 64: 76" in capsys.readouterr().err


def test_set_model_trains_and_keeps_its_architecture_at_the_next_input_size(
    tmp_path: Path,
) -> None:
    first = tmp_path / "stage1.pth"
    args = [*SMALL_RUN, *WIDE_DECODER, "--image-size", "64", "--out", str(first)]
    assert cli_main(args) == 0
    stored = read_checkpoint(first, arch="vit_tiny")
    assert (stored.config.prompt_embed_dim, stored.config.decoder_num_heads) == (96, 8)
    assert stored.config.image_size == 64
    assert stored.state_dict["mask_decoder.iou_token.weight"].shape == (1, 96)

    # The next stage, at an explicit size and at the architecture's default (1024).
    second = tmp_path / "stage2.pth"
    assert (
        cli_main([*SMALL_RUN, "--image-size", "128", "--init", str(first), "--out", str(second)])
        == 0
    )
    resized = read_checkpoint(second, arch="vit_tiny").config
    assert (resized.prompt_embed_dim, resized.image_size) == (96, 128)
    model, config = _model(parse_args([*SMALL_RUN, "--init", str(first), "--out", str(second)]))
    assert (config.prompt_embed_dim, config.image_size) == (96, 1024)
    assert model.image_encoder.pos_embed is not None
    assert model.image_encoder.pos_embed.shape[1:3] == (64, 64)
