"""The mask decoder for many prompts on one image (the automatic generator's batches).

`MaskDecoder.forward` is written for any mix of images and prompts. When B prompts share one
image and no mask prompt (every point-grid batch), most of its work is the same for all rows,
or is linear in the per-prompt image keys and can be regrouped:

- the first two-way block's image-side projections run once (as `forward_shared_kv` does);
- later blocks and the final attention never project the per-prompt keys: a projection
  followed by a dot product with a few (about 7) token vectors per head is the keys' dot
  product with those vectors mapped back through the projection (`_attend_unprojected`,
  `_image_scores_unprojected`), and the pe half of `keys + pe` is projected once per image;
- image->token attention (about 7 token keys per head) is two matrix products per prompt,
  scores against (token, head) columns and probabilities against `v @ out_proj` rows, added to
  the residual in the same product (no per-head attention, no separate out_proj pass);
- the final attention runs only for the IoU and mask tokens (the prompt tokens' outputs are
  not read); the IoU head needs only the tokens, so scores come first and the caller upsamples
  only the prompts it keeps (`masks(…, rows=…)`);
- the two transposed convolutions (kernel = stride = 2) run channel-last as matrix products on
  the keys' own token layout, and the hypernetwork product is taken before the pixels are
  shuffled into place, so only M output channels are permuted instead of C / 8;
- prompts go through in chunks (CHUNK_BYTES): on the CPU a 64-prompt B x HW x C tensor
  costs more in fresh pages and memory traffic than in arithmetic;
- the chunks' large intermediates (image updates, first-block keys, upscaling convs and
  LayerNorm) are written into buffers the decoder keeps (`_workspace`), not fresh tensors:
  glibc mmaps each fresh one this size and the kernel faults its pages in again every time.

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

# Bytes of one image-side tensor (keys B x HW x C; upscaled B x 16HW x C/8) for the prompts
# processed together. A 64-prompt B x HW x C tensor (256 MiB for vit_b) is mmapped by glibc and
# page-faulted in afresh by every operation that makes one, which cost more than its
# arithmetic; blocks under its 32 MiB mmap threshold are reused from the heap. Much smaller
# chunks (1-2 prompts) were cheaper in CPU time on one thread but slower in wall time with two
# threads on a loaded machine (more, shorter parallel regions): 7 prompts for vit_b.
CHUNK_BYTES = 28 << 20
UPSCALE_BYTES = 56 << 20


@dataclass
class DecodedTokens:
    """Transformer output for B prompts: tokens B x (1 + mask tokens) x C (the IoU and mask
    tokens), iou B x 4, and the image keys as consecutive chunks of `chunk` prompts (each
    chunk x HW x C, the last one shorter)."""

    tokens: Tensor
    keys: list[Tensor]
    chunk: int
    iou: Tensor

    def key_rows(self, rows: Tensor) -> Tensor:
        """The keys of prompts `rows`: len(rows) x HW x C (a view when they share a chunk and
        are consecutive)."""
        index = rows.tolist()
        first = index[0] // self.chunk if index else 0
        if (
            index
            and index[-1] // self.chunk == first
            and index == list(range(index[0], index[0] + len(index)))
        ):
            start = index[0] - first * self.chunk
            return self.keys[first][start : start + len(index)]
        return torch.stack([self.keys[i // self.chunk][i % self.chunk] for i in index])


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
        self.image = image.flatten(2).transpose(1, 2).contiguous()  # 1 x HW x C
        self.pe = image_pe.flatten(2).transpose(1, 2).contiguous()
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
        # Later blocks and the final attention meet keys + pe: the pe halves of their image-side
        # projections are also the same for every prompt.
        self.later_pe = [
            (
                _pe_keys(layer.cross_attn_token_to_image, self.pe),
                layer.cross_attn_image_to_token.q_proj(self.pe),
            )
            for layer in self.blocks[1:]
        ]
        self.final_pe = _pe_keys(transformer.final_attn_token_to_image, self.pe)
        self.channels = channels
        # Upscaling outputs, reused by every chunk of this image (see `_workspace`).
        self._buffers: dict[str, Tensor] = {}

    @torch.no_grad()
    def tokens(self, sparse: Tensor) -> DecodedTokens:
        """sparse: B x N x C prompt embeddings -> transformer output and IoU predictions.

        Prompts are independent in the decoder, so they go through it in chunks (CHUNK_BYTES).
        """
        batch = sparse.shape[0]
        chunk = max(1, CHUNK_BYTES // (self.image.numel() * self.image.element_size()))
        parts = [self._chunk_tokens(sparse[i : i + chunk]) for i in range(0, batch, chunk)]
        if not parts:
            parts = [self._chunk_tokens(sparse)]
        return DecodedTokens(
            tokens=torch.cat([tokens for tokens, _, _ in parts]),
            keys=[keys for _, keys, _ in parts],
            chunk=chunk,
            iou=torch.cat([iou for _, _, iou in parts]),
        )

    def _chunk_tokens(self, sparse: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """sparse: B x N x C -> tokens B x (1 + mask tokens) x C, keys B x HW x C, iou B x 4."""
        decoder = self.decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        batch = sparse.shape[0]
        point_embedding = torch.cat(
            (output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse), dim=1
        )
        # Each block's keys go into `out`: the last block's are kept (the upscaling reads them),
        # the others into a buffer reused by the next block and chunk, and the pre-LayerNorm
        # image update always into one (no fresh page-faulted 28 MiB tensor per block).
        shape = (batch, self.image.shape[1], self.channels)
        kept_keys = torch.empty(shape, dtype=self.image.dtype, device=self.image.device)
        last = len(self.blocks) - 1
        update = self._workspace("update", shape, self.image)
        out = kept_keys if last == 0 else self._workspace("keys", shape, self.image)
        queries, keys = self._first_block(self.blocks[0], point_embedding, update, out)
        for number, (layer, pe_terms) in enumerate(
            zip(self.blocks[1:], self.later_pe, strict=True), start=1
        ):
            out = kept_keys if number == last else keys
            queries, keys = _later_block(
                layer, queries, keys, point_embedding, pe_terms, (update, out)
            )
        final = self.transformer.final_attn_token_to_image
        # Only the IoU and mask tokens are read after the final attention (each token's
        # LayerNorm is its own), so the prompt tokens' final queries are not computed.
        kept = 1 + decoder.num_mask_tokens
        q = final.q_proj(queries[:, :kept] + point_embedding[:, :kept])
        attended = _attend_unprojected(final, q, keys, self.final_pe)
        queries = queries[:, :kept] + final.out_proj(attended)
        queries = self.transformer.norm_final_attn(queries)
        return queries, keys, decoder.iou_prediction_head(queries[:, 0, :])

    def _first_block(
        self, layer: TwoWayAttentionBlock, tokens: Tensor, update: Tensor, out: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The first `TwoWayAttentionBlock` (query PE skipped in self-attention) on B prompts:
        tokens B x Nt x C -> (tokens, keys B x HW x C written into `out`); `update` B x HW x C
        is scratch."""
        queries = layer.norm1(layer.self_attn(q=tokens, k=tokens, v=tokens))
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        batch, n_tokens, _ = queries.shape
        # All B*Nt token queries attend to the one image: a single attention over B*Nt rows.
        q = t2i.q_proj(queries + tokens).reshape(1, batch * n_tokens, -1)
        attended = _attend(t2i, q, self.first_k, self.first_v).reshape(batch, n_tokens, -1)
        queries = layer.norm2(queries + t2i.out_proj(attended))
        queries = layer.norm3(queries + layer.mlp(queries))
        token_k, token_v = i2t.k_proj(queries + tokens), i2t.v_proj(queries)
        scores = _image_scores(i2t, self.first_image_q, token_k)
        keys = _layer_norm_into(
            layer.norm4, _image_update(i2t, scores, token_v, self.image, update), out
        )
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
        upscaled_bytes = 2 * self.image.numel() * self.image.element_size()  # 16HW x C/8
        step = max(1, UPSCALE_BYTES // upscaled_bytes)
        parts = [
            self._upscale_and_project(decoded.key_rows(rows[i : i + step]), hyper[i : i + step])
            for i in range(0, len(rows), step)
        ]
        if not parts:
            side_h, side_w = 4 * self.height, 4 * self.width
            return hyper.new_zeros((0, len(index), side_h, side_w))
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
        # The conv outputs (up to 28 and 56 MiB) are written into buffers kept for the next
        # chunk, and the GELUs run in place: a fresh tensor this size is mmapped by glibc and
        # page-faulted in afresh each time, which with two threads faulting one address space
        # cost more than the arithmetic (the bias broadcast into a fresh addmm output alone was
        # about a tenth of the decoder).
        first = self._workspace("conv1", (rows, pixels, 4, conv1.weight.shape[1]), keys)
        x = _conv_channels_last(conv1, keys, first)  # R x HW x 4 x C/4
        x = _layer_norm_into(norm, x, self._workspace("norm", x.shape, x))
        torch.ops.aten.gelu_(x, approximate=act1.approximate)
        second = self._workspace("conv2", (rows, pixels * 4, 4, conv2.weight.shape[1]), keys)
        x = _conv_channels_last(conv2, x.reshape(rows, pixels * 4, -1), second)  # R x 4HW x 4 x C/8
        torch.ops.aten.gelu_(x, approximate=act2.approximate)
        logits = x.reshape(rows, pixels * 16, -1) @ hyper.transpose(1, 2)  # R x 16HW x M
        m = logits.shape[-1]
        h, w = self.height, self.width
        # Sub-pixel order (y, x, ky1, kx1, ky2, kx2): output row 4y + 2ky1 + ky2, same for x.
        logits = logits.reshape(rows, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return logits.reshape(rows, m, 4 * h, 4 * w)

    def _workspace(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A `shape` tensor (dtype and device of `like`) from buffer `name`, grown when too
        small; its contents are whatever the last user left."""
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if (
            buffer is None
            or buffer.numel() < size
            or buffer.dtype != like.dtype
            or buffer.device != like.device
        ):
            buffer = torch.empty(size, dtype=like.dtype, device=like.device)
            self._buffers[name] = buffer
        return buffer[:size].view(shape)


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


def _image_scores(attention: Attention, q: Tensor, k: Tensor) -> Tensor:
    """Image->token scores of projected image queries q (B or 1) x N x D against token keys
    B x T x D -> B x N x T*heads, columns in (token, head) order, divided by sqrt(D / heads).

    With T (about 7) keys per head, the heads are folded into one matrix product per prompt
    against a block-diagonal D x T*heads key matrix.
    """
    heads = attention.num_heads
    batch, tokens, width = k.shape
    per_head = width // heads
    eye = torch.eye(heads, dtype=k.dtype, device=k.device)
    # Columns in (token, head) order: the softmax over tokens then runs on a non-last axis,
    # vectorised over the heads (a softmax over a last axis of ~7 is slow on CPU).
    key_blocks = torch.einsum("bthd,hg->bhdtg", k.reshape(batch, tokens, heads, per_head), eye)
    key_blocks = key_blocks.reshape(batch, width, tokens * heads) * (1.0 / math.sqrt(per_head))
    return torch.matmul(q, key_blocks)


def _image_update(
    attention: Attention, scores: Tensor, v: Tensor, residual: Tensor, out: Tensor
) -> Tensor:
    """residual + `out_proj` of image->token attention: scores B x N x T*heads (from
    `_image_scores`), token values B x T x D, residual (B or 1) x N x C -> `out` B x N x C
    (must not overlap residual).

    The probabilities meet heads*T x C rows `v_t (head h) @ out_proj (head h) + bias / heads`
    (each head's probabilities sum to 1, so the rows carry the bias) in one product that also
    adds the residual; the same sums as attention + out_proj + residual.
    """
    heads = attention.num_heads
    batch, tokens, width = v.shape
    per_head = width // heads
    pixels = scores.shape[1]
    probs = scores.view(batch, pixels, tokens, heads).softmax(dim=2)
    out_weight = attention.out_proj.weight.t().reshape(heads, per_head, -1)
    rows = torch.einsum("bthd,hdc->bthc", v.reshape(batch, tokens, heads, per_head), out_weight)
    if attention.out_proj.bias is not None:
        rows = rows + attention.out_proj.bias / heads
    rows = rows.reshape(batch, tokens * heads, -1)
    return torch.baddbmm(residual, probs.view(batch, pixels, tokens * heads), rows, out=out)


def _later_block(
    layer: TwoWayAttentionBlock,
    queries: Tensor,
    keys: Tensor,
    query_pe: Tensor,
    pe_terms: tuple[Tensor, Tensor],
    buffers: tuple[Tensor, Tensor],
) -> tuple[Tensor, Tensor]:
    """`TwoWayAttentionBlock.forward` (not the first layer) without projecting the keys:
    queries B x Nt x C, keys B x HW x C, query_pe B x Nt x C, pe_terms: the token->image
    `_pe_keys` and the image->token q_proj(pe) (1 x HW x D, bias included), buffers: scratch
    for the image update and the output keys (B x HW x C each; the output may be `keys`,
    which is read only before the update)."""
    pe_k, pe_q = pe_terms
    q = queries + query_pe
    queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    q = t2i.q_proj(queries + query_pe)
    queries = layer.norm2(queries + t2i.out_proj(_attend_unprojected(t2i, q, keys, pe_k)))
    queries = layer.norm3(queries + layer.mlp(queries))
    token_k, token_v = i2t.k_proj(queries + query_pe), i2t.v_proj(queries)
    image_scores = _image_scores_unprojected(i2t, keys, pe_q, token_k)
    update, out = buffers
    updated = _image_update(i2t, image_scores, token_v, keys, update)
    return queries, _layer_norm_into(layer.norm4, updated, out)


def _layer_norm_into(norm: nn.LayerNorm | LayerNorm2d, x: Tensor, out: Tensor) -> Tensor:
    """`norm` over the last axis of x written into `out` (same shape, not
    overlapping x): the same kernel as `nnf.layer_norm`, without a fresh output tensor."""
    stats = (*x.shape[:-1], 1)
    mean, rstd = x.new_empty(stats), x.new_empty(stats)
    torch.ops.aten.native_layer_norm.out(
        x,
        [x.shape[-1]],
        norm.weight,
        norm.bias,
        norm.eps,
        out0=out,
        out1=mean,
        out2=rstd,
    )
    return out


def _pe_keys(attention: Attention, pe: Tensor) -> Tensor:
    """pe 1 x HW x C -> pe @ Wk^T by head: heads x D/heads x HW (no bias: it adds the same
    score to every key, which the softmax over keys cancels)."""
    heads = attention.num_heads
    projected = nnf.linear(pe[0], attention.k_proj.weight)  # HW x D
    pixels, width = projected.shape
    return projected.view(pixels, heads, width // heads).permute(1, 2, 0).contiguous()


def _attend_unprojected(attention: Attention, q: Tensor, keys: Tensor, pe_k: Tensor) -> Tensor:
    """Token->image attention with the image's k and v projections moved to the tokens' side:
    projected q B x Nq x D, keys B x HW x C (k input keys + pe, v input keys), pe_k the
    `_pe_keys` of pe -> merged heads B x Nq x D (before out_proj).

    With Wk_h the head's rows of k_proj, q_h . (x Wk_h^T + bk_h) = (q_h Wk_h) . x + q_h . bk_h:
    each (token, head) becomes one C-wide query against the unprojected keys, and q_h . bk_h is
    the same for every key, which the softmax over keys cancels. Likewise sum_i p_i (x_i Wv_h^T
    + bv_h) = (sum_i p_i x_i) Wv_h^T + bv_h as the probabilities sum to 1. So all heads share
    one C-wide attention with Nq * heads queries: 2 x HW x C x Nq * heads products per prompt
    instead of 2 x HW x C x D for the projections (heads * Nq < D for the 5-7 tokens here).
    The pe half of x = keys + pe is projected once per image (pe_k), so no B x HW x C sum.
    """
    heads = attention.num_heads
    batch, n_q, width = q.shape
    per_head = width // heads
    channels = keys.shape[-1]
    pixels = keys.shape[1]
    q_heads = q.view(batch, n_q, heads, per_head) * (1.0 / math.sqrt(per_head))
    w_k = attention.k_proj.weight.view(heads, per_head, channels)
    w_v = attention.v_proj.weight.view(heads, per_head, channels)
    q_wide = torch.einsum("bthd,hdc->bhtc", q_heads, w_k).reshape(batch, heads * n_q, channels)
    by_head = q_heads.permute(2, 0, 1, 3).reshape(heads, batch * n_q, per_head)
    scores = torch.bmm(by_head, pe_k).view(heads, batch, n_q, pixels).transpose(0, 1)
    scores = scores.reshape(batch, heads * n_q, pixels)  # (head, token) rows, like q_wide
    scores.baddbmm_(q_wide, keys.transpose(1, 2))
    mixed = torch.bmm(scores.softmax(dim=-1), keys)  # B x heads*Nq x C
    out = torch.einsum("bhtc,hdc->bthd", mixed.view(batch, heads, n_q, channels), w_v)
    if attention.v_proj.bias is not None:
        out = out + attention.v_proj.bias.view(heads, per_head)
    return out.reshape(batch, n_q, width)


def _image_scores_unprojected(
    attention: Attention, keys: Tensor, pe_q: Tensor, token_k: Tensor
) -> Tensor:
    """Image->token scores with the keys' q projection moved to the tokens' side: keys
    B x HW x C, pe_q = q_proj(pe) 1 x HW x D (the q input is keys + pe), projected token keys
    B x T x D -> B x HW x T*heads, columns in (token, head) order, divided by sqrt(D / heads).

    (keys + pe) Wq_h^T + bq_h = keys Wq_h^T + pe_q_h, and keys Wq_h^T . k_h = keys . (Wq_h^T
    k_h): one C-wide column per (token, head) for the per-prompt keys, the shared pe_q as
    in `_image_scores`.
    """
    heads = attention.num_heads
    batch, tokens, width = token_k.shape
    per_head = width // heads
    channels = keys.shape[-1]
    k = token_k.view(batch, tokens, heads, per_head) * (1.0 / math.sqrt(per_head))
    w_q = attention.q_proj.weight.view(heads, per_head, channels)
    columns = torch.einsum("bthd,hdc->bcth", k, w_q).reshape(batch, channels, tokens * heads)
    return _image_scores(attention, pe_q, token_k).baddbmm_(keys, columns)


def _conv_channels_last(conv: nn.ConvTranspose2d, x: Tensor, out: Tensor) -> Tensor:
    """A kernel = stride = 2 transposed conv on R x N x Cin pixels -> `out` R x N x 4 x Cout
    (sub-pixel (ky, kx) major, channels last; written in place and returned)."""
    cin, cout, k_h, k_w = conv.weight.shape
    weight = conv.weight.permute(0, 2, 3, 1).reshape(cin, k_h * k_w * cout)
    bias = conv.bias if conv.bias is not None else x.new_zeros(cout)
    rows, pixels, _ = x.shape
    flat = out.view(rows * pixels, k_h * k_w * cout)
    torch.addmm(bias.repeat(k_h * k_w), x.reshape(rows * pixels, cin), weight, out=flat)
    return out
