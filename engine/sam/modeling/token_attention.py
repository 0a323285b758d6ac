"""Multi-head attention of the mask decoder, with an optional narrower internal width."""

import math

from torch import Tensor, nn


class Attention(nn.Module):
    """Attention with separate q/k/v projections to `embedding_dim / downsample_rate` channels."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError(
                f"internal dim {self.internal_dim} is not divisible by num_heads {num_heads}"
            )
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        """B x N x C -> B x heads x N x C/heads."""
        batch, tokens, channels = x.shape
        return x.reshape(batch, tokens, self.num_heads, channels // self.num_heads).transpose(1, 2)

    def _merge_heads(self, x: Tensor) -> Tensor:
        """B x heads x N x C/heads -> B x N x C."""
        batch, heads, tokens, per_head = x.shape
        return x.transpose(1, 2).reshape(batch, tokens, heads * per_head)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q: B x Nq x C, k and v: B x Nk x C -> B x Nq x C."""
        q = self._split_heads(self.q_proj(q))
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        per_head = q.shape[-1]
        attn = q @ k.permute(0, 1, 3, 2)
        attn = attn / math.sqrt(per_head)
        out = attn.softmax(dim=-1) @ v
        return self.out_proj(self._merge_heads(out))
