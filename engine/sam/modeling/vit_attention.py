"""Multi-head self-attention of the image encoder, with decomposed relative positions."""

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from engine.sam.modeling.relative_position import relative_position_bias


class VitAttention(nn.Module):
    """Self-attention over a H x W grid of tokens (a window or the whole 64 x 64 map).

    With `use_sdpa` the softmax(QK^T + bias)V product runs through
    `torch.nn.functional.scaled_dot_product_attention` with the relative-position bias as an
    additive mask; otherwise it is computed explicitly (the reference path).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: tuple[int, int] | None = None,
        use_sdpa: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        self.use_sdpa = use_sdpa
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required with relative positions")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        """x: B x H x W x dim -> B x H x W x dim."""
        batch, height, width, _ = x.shape
        tokens = height * width
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * self.num_heads, tokens, -1).unbind(0)
        bias = None
        if self.use_rel_pos:
            size = (height, width)
            bias = relative_position_bias(q, self.rel_pos_h, self.rel_pos_w, size, size)
        if self.use_sdpa:
            out = nnf.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                attn = attn + bias
            out = attn.softmax(dim=-1) @ v
        out = out.view(batch, self.num_heads, height, width, -1).permute(0, 2, 3, 1, 4)
        return self.proj(out.reshape(batch, height, width, -1))
