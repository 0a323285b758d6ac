"""The mask decoder for many prompts on one image (the automatic generator's batches).

`MaskDecoder.forward` is written for any mix of images and prompts. When B prompts share one
image and no mask prompt (every point-grid batch), most of its work is the same for all rows,
or is linear in the per-prompt image keys and can be regrouped:

- the first two-way block's token->image keys and values are projected once (as
  `forward_shared_kv` does), and the pe halves of every image-side projection too;
- the per-prompt image keys are never formed: after each block they are kept in low-rank
  form, scale * shared image + mix^T @ rows with mix K x HW, K = T * heads + 2 per block
  (low_rank_keys.py), and the later blocks, the final attention and the first transposed
  convolution meet them through the shared image (once per image) and the K-wide mix;
- image->token attention (about 7 token keys per head) gives the mix columns: the scores are
  one d-wide product per head, the softmax runs over the tokens axis for every head at once;
- the final attention runs only for the IoU and mask tokens (the prompt tokens' outputs are
  not read); the IoU head needs only the tokens, so scores come first and the caller upsamples
  only the prompts it keeps (`masks(…, rows=…)`);
- the two transposed convolutions (kernel = stride = 2) run channel-last as matrix products on
  the keys' own pixel layout, and the hypernetwork product is taken before the pixels are
  shuffled into place, so only M output channels are permuted instead of C / 8;
- prompts go through in chunks (CHUNK_BYTES): on the CPU many prompts' HW-sized tensors at
  once cost more in fresh pages and memory traffic than in arithmetic;
- the upscaling's large intermediates (the convolutions' outputs) are written into buffers the
  decoder keeps (`_workspace`), not fresh tensors: glibc mmaps each fresh one this size and
  the kernel faults its pages in again every time.

Each step is the same sum as the reference module up to float rounding order (tests compare
against `MaskDecoder.forward` at 1e-4). No Django here.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from engine.sam.modeling.layers import LayerNorm2d
from engine.sam.modeling.low_rank_keys import (
    LowRankKeys,
    MixGroup,
    SharedImage,
    attend,
    image_scores,
    layer_norm,
    project_into,
)
from engine.sam.modeling.mask_decoder import MaskDecoder, conv_matrix
from engine.sam.modeling.token_attention import Attention
from engine.sam.modeling.two_way_block import TwoWayAttentionBlock
from engine.sam.modeling.two_way_transformer import TwoWayTransformer

# Prompts processed together, in bytes of one HW x C image-sized tensor per prompt (CHUNK_BYTES
# for the transformer, whose per-prompt tensors are now K x HW with K <= 116; UPSCALE_BYTES,
# counted as 2 HW x C, for the upscaling, whose B x 16HW x C/8 outputs are the largest). A
# 64-prompt tensor of that size is mmapped by glibc and page-faulted in afresh by every
# operation that makes one, which cost more than its arithmetic; blocks under its 32 MiB mmap
# threshold are reused from the heap. Transformer chunks of 16 vit_b prompts were faster in wall
# time with two threads than 7 (fewer, longer parallel regions: 9.0 -> 8.0 ms/prompt on a
# 64-prompt batch) and than 32; the upscaling keeps 7.
CHUNK_BYTES = 64 << 20
UPSCALE_BYTES = 56 << 20


@dataclass
class DecodedTokens:
    """Transformer output for B prompts: tokens B x (1 + mask tokens) x C (the IoU and mask
    tokens), iou B x 4, and the image keys (low-rank, see low_rank_keys.py) as consecutive
    chunks of `chunk` prompts (the last one shorter)."""

    tokens: Tensor
    keys: list[LowRankKeys]
    chunk: int
    iou: Tensor

    def key_rows(self, rows: Tensor) -> LowRankKeys:
        """The keys of prompts `rows`, in that order."""
        index = rows.tolist()
        by_chunk: list[LowRankKeys] = []
        start = 0
        # Runs of rows from one chunk are taken together.
        while start < len(index):
            number = index[start] // self.chunk
            end = start
            while end < len(index) and index[end] // self.chunk == number:
                end += 1
            local = [i - number * self.chunk for i in index[start:end]]
            by_chunk.append(self.keys[number].take(local))
            start = end
        return LowRankKeys.cat(by_chunk)


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
        t2i = first.cross_attn_token_to_image
        # The first block's token->image keys and values are the same for every prompt.
        self.first_k = t2i.k_proj(self.image + self.pe)  # 1 x HW x D
        self.first_v = t2i.v_proj(self.image)
        # Every block and the final attention meet keys + pe: the pe halves of their
        # image-side projections are the same for every prompt (the first block's token->image
        # half is unused: its keys are projected whole above).
        self.pe_terms = [
            (
                _pe_keys(layer.cross_attn_token_to_image, self.pe),
                layer.cross_attn_image_to_token.q_proj(self.pe)[0],
            )
            for layer in self.blocks
        ]
        self.final_pe = _pe_keys(transformer.final_attn_token_to_image, self.pe)
        self.shared = SharedImage(self.image[0])
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

    def _chunk_tokens(self, sparse: Tensor) -> tuple[Tensor, LowRankKeys, Tensor]:
        """sparse: B x N x C -> tokens B x (1 + mask tokens) x C, keys (B prompts), iou B x 4."""
        decoder = self.decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        batch = sparse.shape[0]
        point_embedding = torch.cat(
            (output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse), dim=1
        )
        keys = LowRankKeys.image(self.shared, batch)
        queries = point_embedding
        for number, (layer, (pe_k, pe_q)) in enumerate(
            zip(self.blocks, self.pe_terms, strict=True)
        ):
            if number == 0:
                queries = self._first_block_tokens(layer, point_embedding)
            else:
                queries = _later_block_tokens(
                    layer, queries, keys, point_embedding, pe_k, self.shared
                )
            i2t = layer.cross_attn_image_to_token
            token_k, token_v = i2t.k_proj(queries + point_embedding), i2t.v_proj(queries)
            # B x H x T x HW: the softmax over the tokens runs along contiguous pixel rows.
            probs = image_scores(keys, self.shared, i2t, pe_q, token_k).softmax(dim=2)
            group = MixGroup.of_update(i2t, token_v)
            keys = layer_norm(layer.norm4, keys, probs.flatten(1, 2), group, self.shared)
        final = self.transformer.final_attn_token_to_image
        # Only the IoU and mask tokens are read after the final attention (each token's
        # LayerNorm is its own), so the prompt tokens' final queries are not computed.
        kept = 1 + decoder.num_mask_tokens
        q = final.q_proj(queries[:, :kept] + point_embedding[:, :kept])
        attended = attend(keys, self.shared, final, q, self.final_pe)
        queries = queries[:, :kept] + final.out_proj(attended)
        queries = self.transformer.norm_final_attn(queries)
        return queries, keys, decoder.iou_prediction_head(queries[:, 0, :])

    def _first_block_tokens(self, layer: TwoWayAttentionBlock, tokens: Tensor) -> Tensor:
        """The token side of the first `TwoWayAttentionBlock` (query PE skipped in
        self-attention) on B prompts: tokens B x Nt x C -> queries before image->token."""
        queries = layer.norm1(layer.self_attn(q=tokens, k=tokens, v=tokens))
        t2i = layer.cross_attn_token_to_image
        batch, n_tokens, _ = queries.shape
        # All B*Nt token queries attend to the one image: a single attention over B*Nt rows.
        q = t2i.q_proj(queries + tokens).reshape(1, batch * n_tokens, -1)
        attended = _attend(t2i, q, self.first_k, self.first_v).reshape(batch, n_tokens, -1)
        queries = layer.norm2(queries + t2i.out_proj(attended))
        return layer.norm3(queries + layer.mlp(queries))

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

    def _upscale_and_project(self, keys: LowRankKeys, hyper: Tensor) -> Tensor:
        """keys of R prompts, hyper R x M x C/8 -> R x M x 4H x 4W (`output_upscaling` +
        product)."""
        conv1, norm, act1, conv2, act2 = self.decoder.output_upscaling
        if not (
            isinstance(conv1, nn.ConvTranspose2d)
            and isinstance(conv2, nn.ConvTranspose2d)
            and isinstance(norm, LayerNorm2d)
            and isinstance(act1, nn.GELU)
            and isinstance(act2, nn.GELU)
        ):
            raise ValueError("unexpected output_upscaling layout")
        rows, _, pixels = keys.mix.shape
        # The conv outputs (up to 28 and 56 MiB) are written into buffers kept for the next
        # chunk, and the GELUs run in place: a fresh tensor this size is mmapped by glibc and
        # page-faulted in afresh each time, which with two threads faulting one address space
        # cost more than the arithmetic (the bias broadcast into a fresh addmm output alone was
        # about a tenth of the decoder).
        first = self._workspace("conv1", (rows, pixels, 4, conv1.weight.shape[1]), hyper)
        # The first conv is per-pixel linear (kernel = stride = 2): applied to the low-rank
        # keys, K wide per prompt instead of C (`project_into`). Its weights are centred per
        # output pixel, so it gives the LayerNorm's input minus its mean directly.
        weight, bias = _centred_conv_matrix(conv1)
        x = project_into(keys, self.shared, "conv1", weight, bias, first.view(rows, pixels, -1))
        x = _normalise_centred(norm, x.view(rows, pixels, 4, -1))  # R x HW x 4 x C/4
        torch.ops.aten.gelu_(x, approximate=act1.approximate)
        second = self._workspace("conv2", (rows, pixels * 4, 4, conv2.weight.shape[1]), hyper)
        x = _conv_channels_last(conv2, x.reshape(rows, pixels * 4, -1), second)  # R x 4HW x 4 x C/8
        torch.ops.aten.gelu_(x, approximate=act2.approximate)
        # M x 16HW per prompt: the pixels as the long output rows (a 16HW x M product with
        # M = 3 ran far below the GEMM's speed), and the shuffle below moves whole pixel pairs.
        logits = hyper @ x.reshape(rows, pixels * 16, -1).transpose(1, 2)  # R x M x 16HW
        m = logits.shape[1]
        h, w = self.height, self.width
        # Sub-pixel order (y, x, ky1, kx1, ky2, kx2): output row 4y + 2ky1 + ky2, same for x.
        logits = logits.reshape(rows, m, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
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


def _later_block_tokens(
    layer: TwoWayAttentionBlock,
    queries: Tensor,
    keys: LowRankKeys,
    query_pe: Tensor,
    pe_k: Tensor,
    shared: SharedImage,
) -> Tensor:
    """The token side of a later `TwoWayAttentionBlock`: queries B x Nt x C, query_pe
    B x Nt x C, pe_k the token->image `_pe_keys` -> queries before image->token."""
    q = queries + query_pe
    queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
    t2i = layer.cross_attn_token_to_image
    q = t2i.q_proj(queries + query_pe)
    queries = layer.norm2(queries + t2i.out_proj(attend(keys, shared, t2i, q, pe_k)))
    return layer.norm3(queries + layer.mlp(queries))


def _pe_keys(attention: Attention, pe: Tensor) -> Tensor:
    """pe 1 x HW x C -> pe @ Wk^T by head: heads x D/heads x HW (no bias: it adds the same
    score to every key, which the softmax over keys cancels)."""
    heads = attention.num_heads
    projected = nnf.linear(pe[0], attention.k_proj.weight)  # HW x D
    pixels, width = projected.shape
    return projected.view(pixels, heads, width // heads).permute(1, 2, 0).contiguous()


def _centred_conv_matrix(conv: nn.ConvTranspose2d) -> tuple[Tensor, Tensor]:
    """`conv_matrix` minus, for each output pixel (ky, kx), its mean over the Cout channels:
    the conv's output minus its per-pixel channel mean (what LayerNorm2d subtracts)."""
    weight, bias = conv_matrix(conv)
    cin, cout = weight.shape[0], conv.weight.shape[1]
    weight = weight.view(cin, -1, cout)
    weight = (weight - weight.mean(dim=2, keepdim=True)).reshape(cin, -1)
    bias = bias.view(-1, cout)
    return weight, (bias - bias.mean(dim=1, keepdim=True)).flatten()


def _normalise_centred(norm: LayerNorm2d, x: Tensor) -> Tensor:
    """LayerNorm2d over the last axis of x, whose rows already have mean 0 (in place).

    Three passes over x (norm, scale, affine) instead of the LayerNorm kernel's out= variant,
    which was slower on these 64-wide rows.
    """
    squares = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_()
    x.mul_(squares.div_(x.shape[-1]).add_(norm.eps).rsqrt_())
    return torch.addcmul(norm.bias, x, norm.weight, out=x)


def _conv_channels_last(conv: nn.ConvTranspose2d, x: Tensor, out: Tensor) -> Tensor:
    """A kernel = stride = 2 transposed conv on R x N x Cin pixels -> `out` R x N x 4 x Cout
    (sub-pixel (ky, kx) major, channels last; written in place and returned)."""
    weight, bias = conv_matrix(conv)
    rows, pixels, cin = x.shape
    flat = out.view(rows * pixels, weight.shape[1])
    torch.addmm(bias, x.reshape(rows * pixels, cin), weight, out=flat)
    return out
