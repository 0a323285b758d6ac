"""Carry weights across input sizes, for progressive-resolution training of small models.

A SAM image encoder's only size-dependent tensors are its absolute position embedding
(1 x S x S x C, S = image_size / patch_size) and the relative-position tables of its global
attention blocks ((2S - 1) x head_dim each); windowed blocks have fixed (2 * window - 1) tables
and every other weight is size-free. Training first at a small input (e.g. 256: 16x fewer image
tokens, so each step is an order of magnitude cheaper on a CPU) and then continuing at the full
1024 only needs those tensors resampled, which is what ViT fine-tuning at a new resolution does.
"""

import torch
import torch.nn.functional as nnf
from torch import Tensor

from engine.sam.config import SamConfig


def _resize_pos_embed(value: Tensor, side: int) -> Tensor:
    """1 x S x S x C -> 1 x side x side x C, bicubic over the grid."""
    grid = value.permute(0, 3, 1, 2)
    resized = nnf.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).contiguous()


def _resize_rel_pos(value: Tensor, length: int) -> Tensor:
    """L x C -> length x C, linear along the relative offsets."""
    resized = nnf.interpolate(value.T[None], size=length, mode="linear", align_corners=False)
    return resized[0].T.contiguous()


def resize_state_dict(state_dict: dict[str, Tensor], config: SamConfig) -> dict[str, Tensor]:
    """``state_dict`` of any input size, with its position tensors resampled for ``config``.

    Only ``image_encoder.pos_embed`` and the ``rel_pos_h`` / ``rel_pos_w`` tables of the global
    attention blocks change; a tensor that already has the target shape is kept as it is, and
    any other shape difference is an error (the architectures differ, not just the input size).
    """
    side = config.embedding_size
    global_length = 2 * side - 1
    resized: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key == "image_encoder.pos_embed" and value.shape[1] != side:
            resized[key] = _resize_pos_embed(value, side)
        elif key.endswith(("attn.rel_pos_h", "attn.rel_pos_w")) and _is_global(key, config):
            resized[key] = (
                value if value.shape[0] == global_length else _resize_rel_pos(value, global_length)
            )
        else:
            resized[key] = value
    return resized


def _is_global(key: str, config: SamConfig) -> bool:
    """Whether ``image_encoder.blocks.<i>.attn.rel_pos_*`` belongs to a global-attention block."""
    parts = key.split(".")
    try:
        index = int(parts[2])
    except (IndexError, ValueError):
        return False
    return index in config.encoder_global_attn_indexes


@torch.no_grad()
def load_resized(model: torch.nn.Module, state_dict: dict[str, Tensor], config: SamConfig) -> None:
    """Load ``state_dict`` (trained at another input size) into ``model`` built from ``config``;
    strict, so a missing or unexpected key still fails loudly."""
    model.load_state_dict(resize_state_dict(state_dict, config), strict=True)
