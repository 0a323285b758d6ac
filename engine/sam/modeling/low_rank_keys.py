"""The decoder's per-prompt image keys in low-rank form (the automatic generator's batches).

The first two-way block updates the image keys by image->token attention: at each pixel a
softmax over about 7 token keys per head, whose probabilities weight T * heads rows `v @
out_proj` (`MixGroup`). So a prompt's keys after that block are LayerNorm(image + A U), A the
HW x T*heads probabilities and U the T*heads x C rows. A LayerNorm is, pixel by pixel, an affine
map once the pixel's mean and standard deviation are known, so every later keys tensor keeps the
form (`LowRankKeys`)

    keys[b, n] = scale[b, n] * shared[n] + mix[b, :, n] @ rows[b]

with `shared` one HW x C tensor per image (the image times the LayerNorm weights so far) and
`mix` B x K x HW (stored pixels last): the T * heads probabilities of every block so far, each
LayerNorm adding two more (-mean / std, whose row is the weight, and 1, whose row is the bias).
Pixels last keeps every per-pixel operation (softmax over the tokens, the LayerNorm sums, the
per-head products with the shared image) running along long contiguous rows.

What is linear in the keys then splits into a product with `shared`, once per image and cached
(`SharedImage`), and one with `mix`, K (58 after one block, 116 after two) instead of C wide:
the attention scores and values of the later blocks, the final attention and the first
transposed convolution of the upscaling. The LayerNorm's statistics come the same way: the mean
is linear, and a pixel's sum of squares is scale^2 ||shared||^2 (||shared||^2 per image) +
2 scale shared . (mix^T rows) + mix^T (rows rows^T) mix, where shared . rows is again per head
against the shared image (each row is a head's d-wide value vector through a shared matrix).

Same sums as the dense decoder up to float rounding order (tests compare with the dense
LayerNorm and with `MaskDecoder.forward`). No Django here.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from engine.sam.modeling.token_attention import Attention


@dataclass
class MixGroup:
    """The rows of one image->token update, one per (head h, token t):
    values[b, t, h] @ basis[h] + offset.

    values B x T x H x d (the token values), basis H x d x C (out_proj's columns by head,
    times the LayerNorm weights applied since), offset C (out_proj's bias / heads, likewise:
    each head's probabilities sum to 1, so the rows carry the bias).
    """

    values: Tensor
    basis: Tensor
    offset: Tensor

    def rows(self) -> Tensor:
        """B x H*T x C, rows in (head, token) order."""
        batch, tokens, heads, _ = self.values.shape
        rows = torch.einsum("bthd,hdc->bhtc", self.values, self.basis) + self.offset
        return rows.reshape(batch, heads * tokens, -1)

    def scaled(self, weight: Tensor) -> "MixGroup":
        """The rows times a per-channel weight C."""
        return MixGroup(self.values, self.basis * weight, self.offset * weight)

    @staticmethod
    def of_update(attention: Attention, token_v: Tensor) -> "MixGroup":
        """The rows `v @ out_proj` of image->token attention with values token_v B x T x D."""
        heads = attention.num_heads
        batch, tokens, width = token_v.shape
        per_head = width // heads
        weight = attention.out_proj.weight  # C x D
        basis = weight.t().reshape(heads, per_head, weight.shape[0])
        bias = attention.out_proj.bias
        offset = bias / heads if bias is not None else weight.new_zeros(weight.shape[0])
        return MixGroup(token_v.view(batch, tokens, heads, per_head), basis, offset)


# A part of `LowRankKeys.rows`: a `MixGroup`, or fixed rows J x C shared by every prompt.
Part = MixGroup | Tensor


class SharedImage:
    """One image's shared features by LayerNorm stage, with cached products.

    Stage 0 is the image (HW x C); stage k is the image times the first k LayerNorm weights.
    """

    def __init__(self, image: Tensor) -> None:
        self.stages = [image]
        self._cache: dict[tuple[object, ...], Tensor] = {}

    def features(self, stage: int) -> Tensor:
        """HW x C."""
        return self.stages[stage]

    def advance(self, stage: int, weight: Tensor) -> int:
        """The stage after `stage`'s features are scaled by a LayerNorm weight C."""
        if len(self.stages) == stage + 1:
            self.stages.append(self.stages[stage] * weight)
        return stage + 1

    def product(self, key: tuple[object, ...], make: Callable[[], Tensor]) -> Tensor:
        """`make()`, computed once per image for `key`."""
        value = self._cache.get(key)
        if value is None:
            value = make()
            self._cache[key] = value
        return value

    def by_head(self, stage: int, weight: Tensor) -> Tensor:
        """features(stage) @ weight^T for a projection weight D x C (no bias): HW x D, head h
        in columns h*d .. (h+1)*d - 1."""
        return self.product(("linear", stage, id(weight)), lambda: self.stages[stage] @ weight.t())


@dataclass
class LowRankKeys:
    """B prompts' image keys B x HW x C as scale * shared(stage) + mix^T @ rows.

    scale B x HW, mix B x K x HW, rows B x K x C; parts: the structure of rows (in order),
    needed to LayerNorm the keys again (empty for keys taken for the upscaling).
    """

    scale: Tensor
    mix: Tensor
    rows: Tensor
    stage: int
    parts: list[Part] = field(default_factory=list)

    @staticmethod
    def image(shared: SharedImage, batch: int) -> "LowRankKeys":
        """The image itself for B prompts (K = 0)."""
        image = shared.features(0)
        pixels, channels = image.shape
        return LowRankKeys(
            scale=image.new_ones((1, pixels)).expand(batch, -1),
            mix=image.new_zeros((batch, 0, pixels)),
            rows=image.new_zeros((batch, 0, channels)),
            stage=0,
        )

    def dense(self, shared: SharedImage) -> Tensor:
        """The keys themselves, B x HW x C (for tests)."""
        features = shared.features(self.stage)
        return self.scale[..., None] * features + torch.bmm(self.mix.transpose(1, 2), self.rows)

    def take(self, index: list[int]) -> "LowRankKeys":
        """Prompts `index` (the parts are dropped: no further LayerNorm); views when the
        prompts are consecutive (the usual case: every prompt of a chunk kept)."""
        if index and index == list(range(index[0], index[0] + len(index))):
            run = slice(index[0], index[0] + len(index))
            return LowRankKeys(self.scale[run], self.mix[run], self.rows[run], self.stage)
        rows = torch.tensor(index, dtype=torch.long, device=self.mix.device)
        return LowRankKeys(self.scale[rows], self.mix[rows], self.rows[rows], self.stage)

    @staticmethod
    def cat(keys: list["LowRankKeys"]) -> "LowRankKeys":
        """Prompts of several `LowRankKeys` of the same stage and width, in order."""
        if len(keys) == 1:
            return keys[0]
        return LowRankKeys(
            torch.cat([k.scale for k in keys]),
            torch.cat([k.mix for k in keys]),
            torch.cat([k.rows for k in keys]),
            keys[0].stage,
        )


def shared_by_head(shared: Tensor, vectors: Tensor) -> Tensor:
    """shared HW x H*d (one image), vectors B x T x H x d -> B x H x T x HW (a view, pixels
    contiguous): each pixel's head-h features against each prompt's T head-h vectors.

    One d-wide product per head over all B*T vectors (a D-wide product against a
    block-diagonal matrix would be mostly zeros), with the pixels as the long output rows.
    """
    batch, tokens, heads, per_head = vectors.shape
    pixels = shared.shape[0]
    by_head = shared.view(pixels, heads, per_head).permute(1, 2, 0)  # H x d x HW
    rows = vectors.permute(2, 0, 1, 3).reshape(heads, batch * tokens, per_head)
    out = torch.bmm(rows, by_head)  # H x B*T x HW
    return out.view(heads, batch, tokens, pixels).transpose(0, 1)


def image_scores(
    keys: LowRankKeys, shared: SharedImage, attention: Attention, pe_q: Tensor, token_k: Tensor
) -> Tensor:
    """Image->token scores of q = keys + pe against projected token keys B x T x D ->
    B x H x T x HW, divided by sqrt(d). pe_q: q_proj(pe) HW x D (bias included).

    keys Wq^T = scale * (shared Wq^T) + mix^T @ (rows Wq^T): the first per image, the second
    K wide; each meets the token keys head by head.
    """
    heads = attention.num_heads
    batch, tokens, width = token_k.shape
    per_head = width // heads
    pixels = keys.mix.shape[2]
    k = token_k.view(batch, tokens, heads, per_head) * (1.0 / math.sqrt(per_head))
    weight = attention.q_proj.weight
    if keys.mix.shape[1] == 0:
        # The image itself (scale 1, no mix): its projection and pe's meet the keys as one sum.
        image_q = shared.product(
            ("with pe", keys.stage, id(weight)), lambda: shared.by_head(keys.stage, weight) + pe_q
        )
        return shared_by_head(image_q, k)
    projected_rows = (keys.rows @ weight.t()).view(batch, -1, heads, per_head)
    columns = torch.einsum("bkhd,bthd->bhtk", projected_rows, k)
    scores = torch.bmm(columns.reshape(batch, heads * tokens, -1), keys.mix)
    view = scores.view(batch, heads, tokens, pixels)
    view.addcmul_(shared_by_head(shared.by_head(keys.stage, weight), k), keys.scale[:, None, None])
    view.add_(shared_by_head(pe_q, k))
    return view


def attend(
    keys: LowRankKeys, shared: SharedImage, attention: Attention, q: Tensor, pe_k: Tensor
) -> Tensor:
    """Token->image attention of projected q B x Nq x D over the keys (k input keys + pe, v
    input keys) -> merged heads B x Nq x D (before out_proj). pe_k: pe @ Wk^T as H x d x HW.

    Scores: scale * (q_h . shared Wk_h^T) + (rows Wk_h^T q_h) @ mix + q_h . pe Wk_h^T (the k
    bias adds the same score to every pixel, which the softmax cancels). Values: the
    probabilities times scale meet shared Wv^T, their product with mix meets rows Wv^T, and the
    v bias is added once (the probabilities sum to 1).
    """
    heads = attention.num_heads
    batch, n_q, width = q.shape
    per_head = width // heads
    pixels = keys.mix.shape[2]
    q_heads = q.view(batch, n_q, heads, per_head) * (1.0 / math.sqrt(per_head))
    w_k, w_v = attention.k_proj.weight, attention.v_proj.weight
    by_head = q_heads.permute(2, 0, 1, 3).reshape(heads, batch * n_q, per_head)
    rows_k = (keys.rows @ w_k.t()).view(batch, -1, heads, per_head)
    y = torch.einsum("bkhd,bthd->bhtk", rows_k, q_heads).reshape(batch, heads * n_q, -1)
    scores = torch.bmm(y, keys.mix)  # B x H*Nq x HW, (head, token) rows
    view = scores.view(batch, heads, n_q, pixels)
    shared_k = shared.by_head(keys.stage, w_k).view(pixels, heads, per_head).permute(1, 2, 0)
    from_shared = torch.bmm(by_head, shared_k).view(heads, batch, n_q, pixels)
    view.addcmul_(from_shared.transpose(0, 1), keys.scale[:, None, None, :])
    view.add_(torch.bmm(by_head, pe_k).view(heads, batch, n_q, pixels).transpose(0, 1))
    probs = scores.softmax(dim=-1)
    mixed = torch.bmm(probs, keys.mix.transpose(1, 2)).view(batch, heads, n_q, -1)
    rows_v = (keys.rows @ w_v.t()).view(batch, -1, heads, per_head)
    out = torch.einsum("bhtk,bkhd->bthd", mixed, rows_v)
    weighted = probs.view(batch, heads, n_q, pixels) * keys.scale[:, None, None, :]
    weighted = weighted.transpose(0, 1).reshape(heads, batch * n_q, pixels)
    shared_v = shared.by_head(keys.stage, w_v).view(pixels, heads, per_head).transpose(0, 1)
    values = torch.bmm(weighted, shared_v).view(heads, batch, n_q, per_head)
    out += values.permute(1, 2, 0, 3)
    if attention.v_proj.bias is not None:
        out += attention.v_proj.bias.view(heads, per_head)
    return out.reshape(batch, n_q, width)


def layer_norm(
    norm: nn.LayerNorm, keys: LowRankKeys, probs: Tensor, group: MixGroup, shared: SharedImage
) -> LowRankKeys:
    """norm(keys + probs^T @ group.rows()) for image->token probabilities B x H*T x HW (rows
    in (head, token) order), in low-rank form: K grows by H*T + 2."""
    batch, added, pixels = probs.shape
    known = keys.mix.shape[1]
    width = known + added
    features = shared.features(keys.stage)
    channels = features.shape[1]
    mix_all = keys.mix.new_empty((batch, width + 2, pixels))
    mix = mix_all[:, :width]
    mix[:, :known] = keys.mix
    mix[:, known:] = probs
    rows = torch.cat([keys.rows, group.rows()], dim=1)  # B x K x C
    parts = [*keys.parts, group]
    stage = keys.stage
    mean_shared = shared.product(("mean", stage), lambda: features.mean(dim=1))
    squares_shared = shared.product(("squares", stage), lambda: (features * features).sum(1))
    mean = torch.bmm(rows.mean(dim=2)[:, None, :], mix)[:, 0]
    mean.addcmul_(keys.scale, mean_shared)
    # sum_c x^2 = scale^2 |shared|^2 + 2 scale shared . (mix^T rows) + mix^T (rows rows^T) mix
    quadratic = torch.bmm(torch.bmm(rows, rows.transpose(1, 2)), mix)
    squares = quadratic.mul_(mix).sum(dim=1)
    cross = _cross_with_shared(shared, stage, parts, mix)
    squares.addcmul_(keys.scale, cross, value=2.0)
    squares.addcmul_(keys.scale * keys.scale, squares_shared)
    variance = (squares / channels).sub_(mean * mean).clamp_(min=0.0)
    rstd = torch.rsqrt(variance.add_(norm.eps))
    mix.mul_(rstd[:, None, :])
    mix_all[:, width] = -rstd * mean
    mix_all[:, width + 1] = 1.0
    weight, bias = norm.weight, norm.bias
    fixed = torch.stack([weight, bias])  # the -mean/std and 1 rows of mix
    new_rows = torch.cat([rows * weight, fixed.expand(batch, -1, -1)], dim=1)
    scaled = [
        part.scaled(weight) if isinstance(part, MixGroup) else part * weight for part in parts
    ]
    return LowRankKeys(
        scale=keys.scale * rstd,
        mix=mix_all,
        rows=new_rows,
        stage=shared.advance(stage, weight),
        parts=[*scaled, fixed],
    )


def _cross_with_shared(shared: SharedImage, stage: int, parts: list[Part], mix: Tensor) -> Tensor:
    """sum_k mix[b, k, n] * (shared[n] . rows[b, k]) -> B x HW, the rows given by `parts`.

    A group's rows are head vectors through a shared basis: shared @ basis^T is per image,
    then d wide per head.
    """
    features = shared.features(stage)
    batch, _, pixels = mix.shape
    total = mix.new_zeros((batch, pixels))
    start = 0
    for position, part in enumerate(parts):
        if isinstance(part, MixGroup):
            heads, per_head, channels = part.basis.shape
            basis = part.basis.reshape(heads * per_head, channels).t()
            projected = shared.product(
                ("basis", stage, position), partial(torch.matmul, features, basis)
            )  # HW x H*d
            offset = shared.product(
                ("offset", stage, position), partial(torch.matmul, features, part.offset)
            )
            tokens = part.values.shape[1]
            width = tokens * heads
            columns = mix[:, start : start + width].view(batch, heads, tokens, pixels)
            dots = shared_by_head(projected, part.values)  # B x H x T x HW
            total += (columns * dots).sum(dim=(1, 2))
            total.addcmul_(columns.sum(dim=(1, 2)), offset)
        else:
            dots = shared.product(
                ("fixed", stage, position), partial(torch.matmul, part, features.t())
            )  # J x HW
            width = part.shape[0]
            total += (mix[:, start : start + width] * dots).sum(dim=1)
        start += width
    return total


def project_into(
    keys: LowRankKeys,
    shared: SharedImage,
    key: object,
    weight: Tensor,
    bias: Tensor,
    out: Tensor,
) -> Tensor:
    """keys @ weight + bias for a per-pixel linear map weight C x M, bias M -> `out`
    B x HW x M (written in place and returned); `key` names the weight for the per-image
    product shared @ weight."""
    stage = keys.stage
    projected = shared.product(("project", stage, key), lambda: shared.features(stage) @ weight)
    torch.addcmul(bias, projected, keys.scale[..., None], out=out)
    return out.baddbmm_(keys.mix.transpose(1, 2), keys.rows @ weight)
