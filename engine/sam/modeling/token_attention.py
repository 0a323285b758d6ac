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
        # 1 / sqrt(d) multiplies the side with fewer tokens (the prompt tokens, about 7) rather
        # than the scores (about 7 x 4096 per head).
        scale = 1.0 / math.sqrt(q.shape[-1])
        if k.shape[2] < q.shape[2]:
            # Image -> token attention: 4096 queries, about 7 keys. A softmax along a last axis
            # that short runs ~8x slower on the CPU than one across it, so the scores are kept
            # keys-first (B x heads x Nk x Nq) and normalised over the keys axis; same sums.
            attn = (k * scale) @ q.transpose(2, 3)
            out = attn.softmax(dim=2).transpose(2, 3) @ v
        else:
            attn = (q * scale) @ k.permute(0, 1, 3, 2)
            out = attn.softmax(dim=-1) @ v
        return self.out_proj(self._merge_heads(out))

    def forward_shared_kv(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """`forward` for q: B x Nq x C against k and v: 1 x Nk x C shared by the B rows.

        k and v are projected once, and the B x Nq queries attend as one B*Nq-row batch (each
        query row's softmax is its own, so this is `forward` with k, v repeated B times).
        """
        batch, n_q, _ = q.shape
        queries = self._split_heads(self.q_proj(q).reshape(1, batch * n_q, self.internal_dim))
        keys = self._split_heads(self.k_proj(k))
        values = self._split_heads(self.v_proj(v))
        attn = (queries / math.sqrt(queries.shape[-1])) @ keys.permute(0, 1, 3, 2)
        out = self._merge_heads(attn.softmax(dim=-1) @ values)
        return self.out_proj(out.reshape(batch, n_q, self.internal_dim))

    def forward_shared_q(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """`forward` for q: 1 x Nq x C shared by B rows of k and v: B x Nk x C -> B x Nq x C.

        q is projected once; its scores against all B*Nk keys come from one product, and the
        softmax runs over each row's own Nk keys.
        """
        batch, n_k, _ = k.shape
        queries = self._split_heads(self.q_proj(q))[0]  # heads x Nq x d
        keys = self._split_heads(self.k_proj(k).reshape(1, batch * n_k, self.internal_dim))[0]
        values = self._split_heads(self.v_proj(v))  # B x heads x Nk x d
        heads, n_q, per_head = queries.shape
        # scaled on the B*Nk keys: smaller than the scores (Nq x B*Nk) by a factor Nq / d
        attn = queries @ (keys / math.sqrt(per_head)).transpose(1, 2)  # heads x Nq x B*Nk
        attn = attn.reshape(heads, n_q, batch, n_k).softmax(dim=-1)
        out = attn.permute(2, 0, 1, 3) @ values  # B x heads x Nq x d
        return self.out_proj(self._merge_heads(out))
