"""Multi-head self-attention of the image encoder, with decomposed relative positions.

Three kernels compute softmax((q / sqrt(d)) k^T + bias) v, where bias is the decomposed
relative-position term of `relative_position.py`:

- folded SDPA (the default on the CPU; on CUDA under `compile_image_encoder`): the bias of
  query i and key j is bias_h[i, row(j)] + bias_w[i, col(j)], a dot product of
  [bias_h[i], bias_w[i]] with a one-hot of (row(j), col(j)); appended to q and k, it lets
  `scaled_dot_product_attention` run with no mask (flash kernels, no N x N logits stored).
  With it, `bench/sam_speed.py` measured vit_b on 2 CPU cores at 5.55 s (fp32) and 1.97 s
  (bf16) per image against the official 7.66 s. On an H100 it made compiled bf16 encoding a
  little faster than the masked kernel but eager encoding slower (one ad-hoc timing each), so
  CUDA uses it only under `compile_image_encoder`;
- masked SDPA (the CUDA eager default): SDPA with the bias materialised as `attn_mask`;
- explicit (`use_sdpa=False`): one batched matmul for the logits of a group of heads, the two
  bias terms added in place by broadcasting, softmax, matmul.

Window blocks run the qkv and output projections on the real tokens only (`forward_windows`).

All agree with the official implementation within float32 rounding (tests/engine/sam/
test_precision.py checks each against the goldens). Heads are processed in groups so that the
logits of one group stay under `ATTENTION_BUDGET` elements, whatever the batch size.
"""

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from engine.sam.modeling.relative_position import relative_position_bias, relative_positions
from engine.sam.modeling.windows import window_partition, window_unpartition

# Largest logit tensor (elements) built at once: 2**27 floats = 512 MiB, i.e. 8 heads of a
# 64 x 64 global block; windows (196 tokens) take every head of a batch in one group.
ATTENTION_BUDGET = 1 << 27


class VitAttention(nn.Module):
    """Self-attention over a H x W grid of tokens (a window or the whole 64 x 64 map).

    `use_sdpa`: False forces the explicit kernel; True or None (default) use SDPA: folded on
    the CPU, and on CUDA folded when `fold_bias` is set (by `compile_image_encoder`), else
    with the bias as a mask.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: tuple[int, int] | None = None,
        use_sdpa: bool | None = None,
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
        self.fold_bias = False  # on CUDA: folded instead of masked SDPA (see the module doc)
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required with relative positions")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def sdpa_active(self, device: torch.device) -> bool:
        """Whether a forward on `device` uses an SDPA kernel (folded or masked)."""
        del device  # every device: SDPA unless the explicit kernel is asked for
        return self.use_sdpa is not False

    def folded_active(self, device: torch.device) -> bool:
        """Whether a forward on `device` uses the folded-bias SDPA kernel."""
        if not (self.use_rel_pos and self.sdpa_active(device)):
            return False
        return device.type == "cpu" or self.fold_bias

    def forward(self, x: Tensor) -> Tensor:
        """x: B x H x W x dim -> B x H x W x dim."""
        return self.proj(self._attend_grid(self.qkv(x)))

    def forward_windows(self, x: Tensor, window_size: int) -> Tensor:
        """Windowed attention: x B x H x W x dim -> B x H x W x dim.

        The same as cutting zero-padded windows out of x and calling `forward` on them (what
        the official block does), but the qkv and output projections run on the H x W real
        tokens only: a zero token's qkv is exactly the qkv bias, which fills the padding.
        """
        batch, height, width, _ = x.shape
        qkv = self.qkv(x)
        pad_h = (window_size - height % window_size) % window_size
        pad_w = (window_size - width % window_size) % window_size
        if pad_h or pad_w:
            fill = torch.zeros(qkv.shape[-1], dtype=qkv.dtype, device=qkv.device)
            if self.qkv.bias is not None:
                fill = self.qkv.bias.to(qkv.dtype)
            padded = fill.expand(batch, height + pad_h, width + pad_w, -1).clone()
            padded[:, :height, :width, :] = qkv
            qkv = padded
        windows, padded_hw = window_partition(qkv, window_size)
        out = window_unpartition(
            self._attend_grid(windows), window_size, padded_hw, (height, width)
        )
        return self.proj(out)

    def _attend_grid(self, qkv: Tensor) -> Tensor:
        """qkv: B x H x W x 3dim -> attention output B x H x W x dim (before `proj`)."""
        batch, height, width, _ = qkv.shape
        tokens = height * width
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * self.num_heads, tokens, -1).unbind(0)
        group = max(1, ATTENTION_BUDGET // (tokens * tokens))
        attend = self._explicit
        if self.folded_active(qkv.device):
            attend = self._sdpa_folded
        elif self.sdpa_active(qkv.device):
            attend = self._sdpa
        size = (height, width)
        chunks = [
            attend(
                q[start : start + group], k[start : start + group], v[start : start + group], size
            )
            for start in range(0, q.shape[0], group)
        ]
        out = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
        out = out.view(batch, self.num_heads, height, width, -1).permute(0, 2, 3, 1, 4)
        return out.reshape(batch, height, width, -1)

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int]) -> Tensor:
        """q, k, v: G x N x d (N = H * W of `size`) -> G x N x d via the fused kernel."""
        bias = None
        if self.use_rel_pos:
            bias = relative_position_bias(q, self.rel_pos_h, self.rel_pos_w, size, size)
            bias = bias.to(q.dtype)
        # 4-D (1 x G x N x d), the layout the fused CUDA kernels are written for.
        mask = None if bias is None else bias[None]
        out = nnf.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)
        return out[0]

    def _sdpa_folded(self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int]) -> Tensor:
        """q, k, v: G x N x d -> G x N x d via SDPA with the bias folded into the dot product.

        The bias of query i and key j is bias_h[i, row(j)] + bias_w[i, col(j)], which is the dot
        product of [bias_h[i], bias_w[i]] with the one-hot [row(j), col(j)]: appending those to q
        and k gives softmax(q' k'^T) v with no mask, so the flash kernels run it and the
        N x N bias is never stored. Head dims are padded to a multiple of 8 (zeros), v to q's.
        """
        height, width = size
        groups, tokens, dim = q.shape
        r_h = relative_positions(height, height, self.rel_pos_h).to(q.dtype)
        r_w = relative_positions(width, width, self.rel_pos_w).to(q.dtype)
        grid_q = q.reshape(groups, height, width, dim)
        bias_h = torch.einsum("bhwc,hkc->bhwk", grid_q, r_h).reshape(groups, tokens, height)
        bias_w = torch.einsum("bhwc,wkc->bhwk", grid_q, r_w).reshape(groups, tokens, width)
        extra = height + width
        padded = -(-(dim + extra) // 8) * 8
        positions = torch.zeros((tokens, padded - dim), dtype=q.dtype, device=q.device)
        index = torch.arange(tokens, device=q.device)
        positions[index, index // width] = 1.0
        positions[index, height + index % width] = 1.0
        q_aug = torch.cat([q * self.scale, bias_h, bias_w], dim=-1)
        q_aug = nnf.pad(q_aug, (0, padded - dim - extra))
        k_aug = torch.cat([k, positions.expand(groups, -1, -1)], dim=-1)
        v_aug = nnf.pad(v, (0, padded - dim))
        out = nnf.scaled_dot_product_attention(q_aug[None], k_aug[None], v_aug[None], scale=1.0)
        return out[0, :, :, :dim]

    def _explicit(self, q: Tensor, k: Tensor, v: Tensor, size: tuple[int, int]) -> Tensor:
        """q, k, v: G x N x d (N = H * W) -> G x N x d, the bias added in place by broadcast."""
        attn = torch.bmm(q * self.scale, k.transpose(1, 2))
        if self.use_rel_pos:
            height, width = size
            grid_q = q.reshape(-1, height, width, q.shape[-1])
            r_h = relative_positions(height, height, self.rel_pos_h).to(q.dtype)
            r_w = relative_positions(width, width, self.rel_pos_w).to(q.dtype)
            bias_h = torch.einsum("bhwc,hkc->bhwk", grid_q, r_h).to(attn.dtype)
            bias_w = torch.einsum("bhwc,wkc->bhwk", grid_q, r_w).to(attn.dtype)
            logits = attn.view(-1, height, width, height, width)
            logits.add_(bias_h[:, :, :, :, None]).add_(bias_w[:, :, :, None, :])
        attn = attn.softmax(dim=-1)
        return torch.bmm(attn.to(v.dtype), v)
