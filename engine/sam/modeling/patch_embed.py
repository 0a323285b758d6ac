"""Image to patch tokens."""

from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """A strided convolution cutting the image into patch tokens, channels last."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """x: B x 3 x H x W -> B x H/16 x W/16 x embed_dim."""
        return self.proj(x).permute(0, 2, 3, 1)
