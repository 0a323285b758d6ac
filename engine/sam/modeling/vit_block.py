"""One transformer block of the image encoder, windowed or global."""

from torch import Tensor, nn

from engine.sam.modeling.layers import MLPBlock
from engine.sam.modeling.vit_attention import VitAttention
from engine.sam.modeling.windows import window_partition, window_unpartition

__all__ = ["Block", "window_partition", "window_unpartition"]


class Block(nn.Module):
    """Pre-norm attention + MLP block; `window_size` 0 means global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
        use_sdpa: bool | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = VitAttention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            input_size=attn_size,
            use_sdpa=use_sdpa,
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act=nn.GELU)
        self.window_size = window_size

    def forward(self, x: Tensor) -> Tensor:
        """x: B x H x W x dim -> B x H x W x dim."""
        shortcut = x
        x = self.norm1(x)
        x = self.attn.forward_windows(x, self.window_size) if self.window_size > 0 else self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))
