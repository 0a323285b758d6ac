"""Random Fourier-feature positional encoding of normalised (x, y) coordinates."""

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingRandom(nn.Module):
    """Encode coordinates in [0, 1]^2 as [sin(2 pi (2p - 1) G), cos(...)] with a fixed gaussian G.

    G is a 2 x num_pos_feats buffer (part of the state dict), so the encoding has
    2 * num_pos_feats channels.
    """

    positional_encoding_gaussian_matrix: Tensor

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _encode(self, coords: Tensor) -> Tensor:
        """coords: ... x 2 in [0, 1] -> ... x (2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> Tensor:
        """Encoding of every cell centre of an H x W grid: C x H x W."""
        height, width = size
        matrix = self.positional_encoding_gaussian_matrix
        grid = torch.ones((height, width), device=matrix.device, dtype=matrix.dtype)
        y_embed = (grid.cumsum(dim=0) - 0.5) / height
        x_embed = (grid.cumsum(dim=1) - 0.5) / width
        encoding = self._encode(torch.stack([x_embed, y_embed], dim=-1))
        return encoding.permute(2, 0, 1)

    def forward_with_coords(self, coords_input: Tensor, image_size: tuple[int, int]) -> Tensor:
        """coords_input: B x N x 2 pixel (x, y) in an image of (H, W) -> B x N x C."""
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._encode(coords.to(torch.float))
