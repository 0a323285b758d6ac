"""Mask decoder: image embedding + prompt embeddings -> mask logits and IoU predictions."""

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from engine.sam.modeling.layers import MLP, LayerNorm2d


class MaskDecoder(nn.Module):
    """Two-way transformer over [iou token, mask tokens, prompt tokens], then hypernetworks.

    Mask token 0 is the single-mask output; tokens 1..num_multimask_outputs are the ambiguous
    candidates returned with `multimask_output=True`.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        *,
        deferred_shuffle: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """image_embeddings: 1 (or B) x C x 64 x 64, image_pe: 1 x C x 64 x 64,
        sparse: B x N x C, dense: B x C x 64 x 64 -> masks B x M x 256 x 256, iou B x M
        (M = 3 with multimask output, else 1). ``deferred_shuffle``: see `predict_masks`.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            deferred_shuffle=deferred_shuffle,
        )
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen, :, :], iou_pred[:, chosen]

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        *,
        deferred_shuffle: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """All mask tokens: masks B x 4 x 256 x 256, iou B x 4.

        ``deferred_shuffle``: upscale channel-last and shuffle only the M mask logits into
        place (`_masks_deferred_shuffle`); the same sums in another order. The ONNX export uses
        it: onnxruntime spent a third of a vit_b decode moving C/4 and C/8 channels around. So
        do CPU decodes (`defer_shuffle_on`): a vit_b-sized prompt encoder + decoder call took
        34-36 ms against 40-45 (2-core VM), the seed's 7.1-8.5 against 7.5-9.3.
        """
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        batch = sparse_prompt_embeddings.size(0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        if _dense_shared(image_embeddings, dense_prompt_embeddings, batch):
            # One image, one dense embedding for every prompt (no mask_input): the transformer
            # takes the 1 x C x H x W sum and projects the image side once for all prompts.
            src = image_embeddings + dense_prompt_embeddings[:1]
        elif image_embeddings.shape[0] in (1, batch):
            src = image_embeddings + dense_prompt_embeddings  # one image broadcasts
        else:
            src = torch.repeat_interleave(image_embeddings, batch, dim=0)
            src = src + dense_prompt_embeddings
        _, c, h, w = src.shape

        # image_pe (1 x C x H x W) broadcasts over the prompts wherever it is added.
        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        if deferred_shuffle and _deferrable(self.output_upscaling):
            masks = _masks_deferred_shuffle(self.output_upscaling, src, hyper_in, h, w)
        else:
            upscaled = self._upscale(src.transpose(1, 2).reshape(batch, c, h, w))
            b, c, h, w = upscaled.shape
            masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)

    def _upscale(self, x: Tensor) -> Tensor:
        """B x C x 64 x 64 -> B x C/8 x 256 x 256 through `output_upscaling`.

        Its transposed convolutions have kernel = stride = 2, so no two input pixels overlap:
        each is one matrix product followed by a pixel shuffle (faster on the CPU than the
        convolution kernel; same weights, same sums).
        """
        for layer in self.output_upscaling:
            if isinstance(layer, nn.ConvTranspose2d) and _is_pixel_shuffle(layer):
                x = _transposed_conv_as_matmul(layer, x)
            else:
                x = layer(x)
        return x


def _dense_shared(image_embeddings: Tensor, dense: Tensor, batch: int) -> bool:
    """Whether all `batch` prompts see the same image + dense sum, known from shapes alone.

    The prompt encoder's no-mask embedding is `expand`ed over the batch (batch stride 0), so
    its rows are one tensor by construction; a mask prompt gives a real B x C x H x W tensor.
    """
    if batch < 2 or image_embeddings.shape[0] != 1:
        return False
    return dense.shape[0] == 1 or dense.stride(0) == 0


def _is_pixel_shuffle(conv: nn.ConvTranspose2d) -> bool:
    return (
        conv.kernel_size == conv.stride
        and conv.padding == (0, 0)
        and conv.output_padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
    )


def _transposed_conv_as_matmul(conv: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """x: B x Cin x H x W -> B x Cout x kH*H x kW*W for a non-overlapping transposed conv."""
    batch, channels, height, width = x.shape
    k_h, k_w = conv.kernel_size
    out_channels = conv.out_channels
    weight = conv.weight.reshape(channels, out_channels * k_h * k_w)
    pixels = x.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    y = (pixels @ weight.to(pixels.dtype)).reshape(batch, height, width, out_channels, k_h, k_w)
    y = y.permute(0, 3, 1, 4, 2, 5).reshape(batch, out_channels, height * k_h, width * k_w)
    if conv.bias is not None:
        y = y + conv.bias.to(y.dtype)[None, :, None, None]
    return y


def conv_matrix(conv: nn.ConvTranspose2d) -> tuple[Tensor, Tensor]:
    """A kernel = stride = 2 transposed conv as a per-pixel map: weight Cin x 4*Cout (sub-pixel
    (ky, kx) major, channels last) and bias 4*Cout."""
    cin, cout, k_h, k_w = conv.weight.shape
    weight = conv.weight.permute(0, 2, 3, 1).reshape(cin, k_h * k_w * cout)
    bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(cout)
    return weight, bias.repeat(k_h * k_w)


def defer_shuffle_on(device: torch.device) -> bool:
    """Whether decodes on ``device`` take `predict_masks`'s ``deferred_shuffle`` order: on the
    CPU, where the pixel shuffles of C/4 and C/8 channels cost 10-25 % of a vit_b-sized decode
    (the same sums in another order); the GPU keeps the reference order. `SamPredictor`, the
    training interaction and its evaluation all ask here."""
    return device.type == "cpu"


def _deferrable(upscaling: nn.Sequential) -> bool:
    """Whether `output_upscaling` is SAM's: 2x2/2 convT, LayerNorm2d, act, 2x2/2 convT, act."""
    kinds = [type(layer) for layer in upscaling]
    if len(kinds) != 5 or kinds[1] is not LayerNorm2d:
        return False
    first, second = upscaling[0], upscaling[3]
    return all(
        isinstance(conv, nn.ConvTranspose2d)
        and _is_pixel_shuffle(conv)
        and conv.kernel_size == (2, 2)
        and conv.bias is not None
        for conv in (first, second)
    )


def _masks_deferred_shuffle(
    upscaling: nn.Sequential, keys: Tensor, hyper_in: Tensor, height: int, width: int
) -> Tensor:
    """keys B x HW x C (the transformer's image side), hyper_in B x M x C/8 -> B x M x 4H x 4W.

    Both transposed convolutions (kernel = stride = 2) map one pixel to a 2 x 2 block, and the
    LayerNorm, the activations and the hypernetwork product are per pixel, so everything runs on
    the keys' own channel-last rows, each pixel carrying its 4 x 4 output block, and only the
    M logits are shuffled into place at the end (instead of C/4 and C/8 channels twice).
    """
    first, norm, act1, second, act2 = (upscaling[index] for index in range(5))
    # Checked by _deferrable; the asserts tell the type checker.
    assert isinstance(first, nn.ConvTranspose2d)
    assert isinstance(second, nn.ConvTranspose2d)
    assert isinstance(norm, LayerNorm2d)
    batch, pixels, _ = keys.shape
    mid, out = first.out_channels, second.out_channels
    w1, b1 = conv_matrix(first)  # columns ordered (dy, dx, channel)
    x = (keys @ w1 + b1).reshape(batch, pixels, 4, mid)
    x = act1(nnf.layer_norm(x, (mid,), norm.weight, norm.bias, norm.eps))
    w2, b2 = conv_matrix(second)
    x = act2((x @ w2 + b2).reshape(batch, pixels * 16, out))
    logits = hyper_in @ x.transpose(1, 2)  # B x M x (H W dy dx ey ex)
    # Output row 4y + 2dy + ey, column 4x + 2dx + ex, in two moves: the (dy, dx) blocks
    # carrying their 4 (ey, ex) values, then (ey, ex) inside them. One 8-axis permutation
    # copied runs of 1-2 values: 0.77 ms for a 64 x 64 grid's 4 masks against 0.25 (2 cores).
    masks = logits.reshape(batch, -1, height, width, 2, 2, 4)
    masks = masks.permute(0, 1, 2, 4, 3, 5, 6).contiguous()  # B M H dy W dx (ey ex)
    masks = masks.reshape(batch, -1, 2 * height, 2 * width, 2, 2).permute(0, 1, 2, 4, 3, 5)
    return masks.reshape(batch, -1, 4 * height, 4 * width)
