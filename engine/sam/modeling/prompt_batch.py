"""The mask decoder for many prompts on one image (the automatic generator's batches).

`MaskDecoder.forward` is written for any mix of images and prompts. When B prompts share one
image and no mask prompt (every point-grid batch), most of its work is the same for all rows,
or is linear in the per-prompt image keys and can be regrouped:

- the first two-way block's image-side projections run once (as `forward_shared_kv` does);
- in later blocks and the final attention, `proj(keys + pe)` = `keys @ W + (pe @ W + b)`: the
  positional term is computed once per image, and the three projections that read the same
  keys (token->image k and v, image->token q) are one matrix product;
- image->token attention (about 7 token keys per head) is two matrix products per prompt,
  scores against block-diagonal keys and probabilities against `v @ out_proj` rows, added to
  the residual in the same product (no per-head attention, no separate out_proj pass);
- the IoU head needs only the tokens, so scores come first and the caller upsamples only the
  prompts it keeps (`masks(…, rows=…)`);
- the two transposed convolutions (kernel = stride = 2) run channel-last as matrix products on
  the keys' own token layout, and the hypernetwork product is taken before the pixels are
  shuffled into place, so only M output channels are permuted instead of C / 8.

Each step is the same sum as the reference module up to float rounding order (tests compare
against `MaskDecoder.forward` at 1e-4). No Django here.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from engine.sam.modeling.layers import LayerNorm2d
from engine.sam.modeling.mask_decoder import MaskDecoder
from engine.sam.modeling.token_attention import Attention
from engine.sam.modeling.two_way_block import TwoWayAttentionBlock
from engine.sam.modeling.two_way_transformer import TwoWayTransformer

UPSCALE_ROWS = 8  # prompts upscaled together: bounds the B x 65536 x C/8 intermediate


@dataclass
class _KeyProjections:
    """Fused projections of per-prompt keys for one attention site: keys @ weight + pe_term."""

    weight: Tensor  # C x K (K = sum of the fused projection widths)
    pe_term: Tensor  # HW x K: pe @ W + b for (keys + pe) inputs, b alone for plain keys


@dataclass
class DecodedTokens:
    """Transformer output for B prompts: tokens B x Nt x C, image keys B x HW x C, iou B x 4."""

    tokens: Tensor
    keys: Tensor
    iou: Tensor


class PromptBatchDecoder:
    """Decode many prompt embeddings against one image embedding (no mask prompts).

    image: 1 x C x H x W (image embedding + the no-mask dense embedding), image_pe 1 x C x H x W.
    """

    def __init__(self, decoder: MaskDecoder, image: Tensor, image_pe: Tensor) -> None:
        transformer = decoder.transformer
        if not isinstance(transformer, TwoWayTransformer) or image.shape[0] != 1:
            raise ValueError("PromptBatchDecoder needs a TwoWayTransformer and one image")
        self.decoder = decoder
        self.transformer = transformer
        _, channels, self.height, self.width = image.shape
        self.image = image.flatten(2).transpose(1, 2)  # 1 x HW x C
        self.pe = image_pe.flatten(2).transpose(1, 2)
        pe = self.pe[0]
        self.blocks = [b for b in transformer.layers if isinstance(b, TwoWayAttentionBlock)]
        if len(self.blocks) != len(transformer.layers) or not self.blocks[0].skip_first_layer_pe:
            raise ValueError("the first two-way block must skip the query PE (official layout)")
        first = self.blocks[0]
        image_with_pe = self.image + self.pe
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        # The first block's image side is the same for every prompt: project it once.
        self.first_k = t2i.k_proj(image_with_pe)  # 1 x HW x D
        self.first_v = t2i.v_proj(self.image)
        self.first_image_q = i2t.q_proj(image_with_pe)
        self.later = [
            _fused(
                pe,
                [
                    (layer.cross_attn_token_to_image.k_proj, True),
                    (layer.cross_attn_token_to_image.v_proj, False),
                    (layer.cross_attn_image_to_token.q_proj, True),
                ],
            )
            for layer in self.blocks[1:]
        ]
        final = transformer.final_attn_token_to_image
        self.final = _fused(pe, [(final.k_proj, True), (final.v_proj, False)])
        self.channels = channels

    @torch.no_grad()
    def tokens(self, sparse: Tensor) -> DecodedTokens:
        """sparse: B x N x C prompt embeddings -> transformer output and IoU predictions."""
        decoder = self.decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        batch = sparse.shape[0]
        point_embedding = torch.cat(
            (output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse), dim=1
        )
        queries, keys = self._first_block(self.blocks[0], point_embedding)
        for layer, fused in zip(self.blocks[1:], self.later, strict=True):
            queries, keys = _later_block(layer, fused, queries, keys, point_embedding)
        final = self.transformer.final_attn_token_to_image
        projected = _project(keys, self.final)
        k, v = projected.split(final.internal_dim, dim=-1)
        q = final.q_proj(queries + point_embedding)
        queries = queries + final.out_proj(_attend(final, q, k, v))
        queries = self.transformer.norm_final_attn(queries)
        iou = decoder.iou_prediction_head(queries[:, 0, :])
        return DecodedTokens(tokens=queries, keys=keys, iou=iou)

    def _first_block(self, layer: TwoWayAttentionBlock, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The first `TwoWayAttentionBlock` (query PE skipped in self-attention) on B prompts:
        tokens B x Nt x C -> (tokens, keys B x HW x C)."""
        queries = layer.norm1(layer.self_attn(q=tokens, k=tokens, v=tokens))
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        batch, n_tokens, _ = queries.shape
        # All B*Nt token queries attend to the one image: a single attention over B*Nt rows.
        q = t2i.q_proj(queries + tokens).reshape(1, batch * n_tokens, -1)
        attended = _attend(t2i, q, self.first_k, self.first_v).reshape(batch, n_tokens, -1)
        queries = layer.norm2(queries + t2i.out_proj(attended))
        queries = layer.norm3(queries + layer.mlp(queries))
        token_k, token_v = i2t.k_proj(queries + tokens), i2t.v_proj(queries)
        keys = layer.norm4(_image_update(i2t, self.first_image_q, token_k, token_v, self.image))
        return queries, keys

    @torch.no_grad()
    def masks(self, decoded: DecodedTokens, rows: Tensor, tokens: slice) -> Tensor:
        """Low-res mask logits len(rows) x M x 4H x 4W for prompts `rows`, mask tokens `tokens`
        (slice over the 4 mask tokens: 1..3 multimask, 0 single)."""
        decoder = self.decoder
        index = range(decoder.num_mask_tokens)[tokens]
        mask_tokens = decoded.tokens[rows, 1 : 1 + decoder.num_mask_tokens, :]
        hyper = torch.stack(
            [decoder.output_hypernetworks_mlps[i](mask_tokens[:, i, :]) for i in index], dim=1
        )  # R x M x C/8
        parts = [
            self._upscale_and_project(
                _rows_of(decoded.keys, rows[i : i + UPSCALE_ROWS]), hyper[i : i + UPSCALE_ROWS]
            )
            for i in range(0, len(rows), UPSCALE_ROWS)
        ]
        if not parts:
            side_h, side_w = 4 * self.height, 4 * self.width
            return decoded.keys.new_zeros((0, len(index), side_h, side_w))
        return torch.cat(parts)

    def _upscale_and_project(self, keys: Tensor, hyper: Tensor) -> Tensor:
        """keys R x HW x C, hyper R x M x C/8 -> R x M x 4H x 4W (`output_upscaling` + product)."""
        conv1, norm, act1, conv2, act2 = self.decoder.output_upscaling
        if not (
            isinstance(conv1, nn.ConvTranspose2d)
            and isinstance(conv2, nn.ConvTranspose2d)
            and isinstance(norm, LayerNorm2d)
            and isinstance(act1, nn.GELU)
            and isinstance(act2, nn.GELU)
        ):
            raise ValueError("unexpected output_upscaling layout")
        rows, pixels, _ = keys.shape
        x = _conv_channels_last(conv1, keys)  # R x HW x 4 x C/4
        x = nnf.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)
        x = nnf.gelu(x, approximate=act1.approximate)
        x = _conv_channels_last(conv2, x.reshape(rows, pixels * 4, -1))  # R x 4HW x 4 x C/8
        x = nnf.gelu(x, approximate=act2.approximate)
        logits = x.reshape(rows, pixels * 16, -1) @ hyper.transpose(1, 2)  # R x 16HW x M
        m = logits.shape[-1]
        h, w = self.height, self.width
        # Sub-pixel order (y, x, ky1, kx1, ky2, kx2): output row 4y + 2ky1 + ky2, same for x.
        logits = logits.reshape(rows, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return logits.reshape(rows, m, 4 * h, 4 * w)


def _rows_of(x: Tensor, rows: Tensor) -> Tensor:
    """x[rows] for a short chunk of row indices: a view when they are consecutive."""
    first = int(rows[0]) if len(rows) else 0
    if len(rows) and int(rows[-1]) - first + 1 == len(rows) and bool((rows.diff() == 1).all()):
        return x[first : first + len(rows)]
    return x.index_select(0, rows)


def _fused(pe: Tensor, order: list[tuple[nn.Linear, bool]]) -> _KeyProjections:
    """Concatenate projections (in `order`; True = its input is keys + pe) into one product."""
    weight = torch.cat([linear.weight.t() for linear, _ in order], dim=1).contiguous()
    terms = []
    for linear, adds_pe in order:
        bias = linear.bias if linear.bias is not None else pe.new_zeros(linear.out_features)
        terms.append(
            nnf.linear(pe, linear.weight, bias) if adds_pe else bias.expand(pe.shape[0], -1)
        )
    return _KeyProjections(weight=weight, pe_term=torch.cat(terms, dim=1).contiguous())


def _project(keys: Tensor, fused: _KeyProjections) -> Tensor:
    """keys B x HW x C -> B x HW x K."""
    out = keys @ fused.weight
    out += fused.pe_term
    return out


def _heads(x: Tensor, heads: int) -> Tensor:
    """B x N x D -> B x heads x N x D/heads (a view when possible)."""
    batch, tokens, width = x.shape
    return x.reshape(batch, tokens, heads, width // heads).transpose(1, 2)


def _attend(attention: Attention, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Projected q B x Nq x D, k and v B x Nk x D -> merged heads B x Nq x D (before out_proj).

    q may have batch 1 against B rows of k and v (one image's queries for every prompt).
    """
    heads = attention.num_heads
    qh, kh, vh = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    if qh.shape[0] != kh.shape[0]:
        qh = qh.expand(kh.shape[0], -1, -1, -1)
    out = nnf.scaled_dot_product_attention(qh, kh, vh)
    batch, _, tokens, per_head = out.shape
    return out.transpose(1, 2).reshape(batch, tokens, heads * per_head)


def _image_update(
    attention: Attention, q: Tensor, k: Tensor, v: Tensor, residual: Tensor
) -> Tensor:
    """residual + `out_proj` of image->token attention: image queries q (B or 1) x N x D,
    token keys and values B x T x D, residual (B or 1) x N x C -> B x N x C.

    With T (about 7) keys per head, the heads are folded into two matrix products per prompt:
    scores against a block-diagonal D x heads*T key matrix, then the probabilities against
    heads*T x C rows `v_t (head h) @ out_proj (head h) + bias / heads` (each head's
    probabilities sum to 1, so the rows carry the bias), added to the residual in the same
    product; the same sums as attention + out_proj + residual.
    """
    heads = attention.num_heads
    batch, tokens, width = k.shape
    per_head = width // heads
    eye = torch.eye(heads, dtype=k.dtype, device=k.device)
    # Columns in (token, head) order: the softmax over tokens then runs on a non-last axis,
    # vectorised over the heads (a softmax over a last axis of ~7 is slow on CPU).
    key_blocks = torch.einsum("bthd,hg->bhdtg", k.reshape(batch, tokens, heads, per_head), eye)
    key_blocks = key_blocks.reshape(batch, width, tokens * heads) * (1.0 / math.sqrt(per_head))
    scores = torch.matmul(q, key_blocks)  # B x N x T*heads
    pixels = scores.shape[1]
    probs = scores.view(batch, pixels, tokens, heads).softmax(dim=2)
    out_weight = attention.out_proj.weight.t().reshape(heads, per_head, -1)
    rows = torch.einsum("bthd,hdc->bthc", v.reshape(batch, tokens, heads, per_head), out_weight)
    if attention.out_proj.bias is not None:
        rows = rows + attention.out_proj.bias / heads
    rows = rows.reshape(batch, tokens * heads, -1)
    return torch.baddbmm(residual, probs.view(batch, pixels, tokens * heads), rows)


def _later_block(
    layer: TwoWayAttentionBlock,
    fused: _KeyProjections,
    queries: Tensor,
    keys: Tensor,
    query_pe: Tensor,
) -> tuple[Tensor, Tensor]:
    """`TwoWayAttentionBlock.forward` (not the first layer) with the keys' projections fused."""
    q = queries + query_pe
    queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    projected = _project(keys, fused)  # B x HW x (k, v of token->image, q of image->token)
    k, v, image_q = projected.split([t2i.internal_dim, t2i.internal_dim, i2t.internal_dim], dim=-1)
    q = t2i.q_proj(queries + query_pe)
    queries = layer.norm2(queries + t2i.out_proj(_attend(t2i, q, k, v)))
    queries = layer.norm3(queries + layer.mlp(queries))
    q = queries + query_pe
    token_k, token_v = i2t.k_proj(q), i2t.v_proj(queries)
    keys = layer.norm4(_image_update(i2t, image_q, token_k, token_v, keys))
    return queries, keys


def _conv_channels_last(conv: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """A kernel = stride = 2 transposed conv on R x N x Cin pixels -> R x N x 4 x Cout
    (sub-pixel (ky, kx) major, channels last)."""
    cin, cout, k_h, k_w = conv.weight.shape
    weight = conv.weight.permute(0, 2, 3, 1).reshape(cin, k_h * k_w * cout)
    bias = conv.bias if conv.bias is not None else x.new_zeros(cout)
    rows, pixels, _ = x.shape
    out = torch.addmm(bias.repeat(k_h * k_w), x.reshape(rows * pixels, cin), weight)
    return out.reshape(rows, pixels, k_h * k_w, cout)
