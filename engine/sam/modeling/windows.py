"""Cutting a token map into non-overlapping square windows and putting it back."""

import torch.nn.functional as nnf
from torch import Tensor


def window_partition(x: Tensor, window_size: int) -> tuple[Tensor, tuple[int, int]]:
    """Cut a token map into non-overlapping windows, zero-padding right and bottom.

    x: B x H x W x C -> (B * nWindows) x window x window x C, and the padded (Hp, Wp).
    """
    batch, height, width, channels = x.shape
    pad_h = (window_size - height % window_size) % window_size
    pad_w = (window_size - width % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = nnf.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = height + pad_h, width + pad_w
    x = x.view(
        batch, padded_h // window_size, window_size, padded_w // window_size, window_size, channels
    )
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, channels)
    return windows, (padded_h, padded_w)


def window_unpartition(
    windows: Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> Tensor:
    """Inverse of `window_partition`: (B * nWindows) x w x w x C -> B x H x W x C."""
    padded_h, padded_w = padded_hw
    height, width = hw
    per_image = (padded_h // window_size) * (padded_w // window_size)
    batch = windows.shape[0] // per_image
    x = windows.view(
        batch, padded_h // window_size, padded_w // window_size, window_size, window_size, -1
    )
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_h, padded_w, -1)
    if padded_h > height or padded_w > width:
        x = x[:, :height, :width, :].contiguous()
    return x
