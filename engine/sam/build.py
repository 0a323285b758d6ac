"""Builders: an architecture name or a `SamConfig` -> an eval-mode `Sam`."""

from collections.abc import Callable
from pathlib import Path

import torch

from engine.sam.config import CONFIGS, SamConfig
from engine.sam.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer


def build_sam_from_config(config: SamConfig, *, device: torch.device | str | None = None) -> Sam:
    """A randomly initialised `Sam` (eval mode) for `config`; `device="meta"` allocates nothing."""
    grid = config.embedding_size
    with torch.device(device) if device is not None else _no_device():
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=config.image_size,
                patch_size=config.patch_size,
                embed_dim=config.encoder_embed_dim,
                depth=config.encoder_depth,
                num_heads=config.encoder_num_heads,
                mlp_ratio=config.mlp_ratio,
                out_chans=config.prompt_embed_dim,
                qkv_bias=True,
                use_rel_pos=True,
                window_size=config.window_size,
                global_attn_indexes=config.encoder_global_attn_indexes,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=config.prompt_embed_dim,
                image_embedding_size=(grid, grid),
                input_image_size=(config.image_size, config.image_size),
                mask_in_chans=config.mask_in_chans,
            ),
            mask_decoder=build_mask_decoder(config),
        )
    sam.eval()
    return sam


def build_mask_decoder(config: SamConfig) -> MaskDecoder:
    """A randomly initialised `MaskDecoder` of `config` (on torch's current default device)."""
    return MaskDecoder(
        transformer_dim=config.prompt_embed_dim,
        transformer=TwoWayTransformer(
            depth=config.decoder_depth,
            embedding_dim=config.prompt_embed_dim,
            num_heads=config.decoder_num_heads,
            mlp_dim=config.decoder_mlp_dim,
            attention_downsample_rate=config.attention_downsample_rate,
        ),
        num_multimask_outputs=config.num_multimask_outputs,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )


class _no_device:  # noqa: N801 - a do-nothing context manager standing in for torch.device
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def build_sam(
    arch: str = "default",
    checkpoint: str | Path | None = None,
    *,
    device: torch.device | str | None = None,
) -> Sam:
    """Build `arch` ("vit_h" = "default", "vit_l", "vit_b", "vit_tiny"), loading `checkpoint`.

    The checkpoint may be an official `sam_vit_*.pth` state dict or one of ours; it is loaded
    with `weights_only=True` and strict keys (see `engine.sam.checkpoint`).
    """
    name = "vit_h" if arch == "default" else arch
    if name not in CONFIGS:
        raise ValueError(f"unknown SAM architecture {arch!r}; known: {sorted(sam_model_registry)}")
    if checkpoint is None:
        return build_sam_from_config(CONFIGS[name], device=device)
    from engine.sam.checkpoint import load_sam

    sam = load_sam(checkpoint, arch=name)
    return sam if device is None else sam.to(device)


def build_sam_vit_h(checkpoint: str | Path | None = None) -> Sam:
    return build_sam("vit_h", checkpoint)


def build_sam_vit_l(checkpoint: str | Path | None = None) -> Sam:
    return build_sam("vit_l", checkpoint)


def build_sam_vit_b(checkpoint: str | Path | None = None) -> Sam:
    return build_sam("vit_b", checkpoint)


def build_sam_vit_tiny(checkpoint: str | Path | None = None) -> Sam:
    return build_sam("vit_tiny", checkpoint)


sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "vit_tiny": build_sam_vit_tiny,
}
