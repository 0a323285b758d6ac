"""Decomposed relative position bias of the ViT attention (MViTv2 style).

The bias added to the attention logits of a query at (qh, qw) and a key at (kh, kw) is
q . R_h[qh - kh] + q . R_w[qw - kw], with one learned table per axis.
"""

import torch
import torch.nn.functional as nnf
from torch import Tensor


def relative_positions(q_size: int, k_size: int, table: Tensor) -> Tensor:
    """Gather the relative-position table for every (query, key) offset on one axis.

    table: L x C, with L = 2 * max(q_size, k_size) - 1 when trained at this size; another
    length is linearly resampled. Returns q_size x k_size x C.
    """
    length = 2 * max(q_size, k_size) - 1
    if table.shape[0] != length:
        resampled = nnf.interpolate(
            table.reshape(1, table.shape[0], -1).permute(0, 2, 1), size=length, mode="linear"
        )
        table = resampled.reshape(-1, length).permute(1, 0)
    q_coords = torch.arange(q_size, device=table.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=table.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[offsets.long()]


def relative_position_bias(
    q: Tensor,
    table_h: Tensor,
    table_w: Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> Tensor:
    """The decomposed bias for unscaled queries.

    q: B x (qh*qw) x C; returns B x (qh*qw) x (kh*kw), to be added to the attention logits.
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    r_h = relative_positions(q_h, k_h, table_h)
    r_w = relative_positions(q_w, k_w, table_w)
    batch, _, dim = q.shape
    grid_q = q.reshape(batch, q_h, q_w, dim)
    bias_h = torch.einsum("bhwc,hkc->bhwk", grid_q, r_h)
    bias_w = torch.einsum("bhwc,wkc->bhwk", grid_q, r_w)
    bias = bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]
    return bias.reshape(batch, q_h * q_w, k_h * k_w)
