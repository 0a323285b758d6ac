"""Low-res logits -> original-size logits, without upsampling rows and columns that are cut.

`Sam.postprocess_masks` upsamples 256 x 256 logits to the padded 1024 x 1024 input, crops the
resized image (h x w) and resizes that to the original size. Output pixel i of the first step
reads input pixels floor(max(0, (i + 0.5) / 4 - 0.5)) and the next one, so rows below
ceil(h / 4) + 1 never reach the crop: upsampling only those (the scale stays exactly 1/4)
gives the same numbers bit for bit with a fraction of the work when the image is not square.
"""

import math

import torch.nn.functional as nnf
from torch import Tensor

from engine.sam.modeling import Sam


def upsample_logits(
    model: Sam, low_res: Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
) -> Tensor:
    """low_res N x 256 x 256 -> N x H x W logits, equal to `model.postprocess_masks`."""
    side = low_res.shape[-1]
    factor = model.img_size // side
    if factor * side != model.img_size or factor & (factor - 1) or low_res.shape[-2] != side:
        return model.postprocess_masks(low_res[None], input_size, original_size)[0]
    rows = min(side, math.ceil(input_size[0] / factor) + 1)
    cols = min(side, math.ceil(input_size[1] / factor) + 1)
    needed = low_res[None, :, :rows, :cols]
    padded = nnf.interpolate(
        needed, (rows * factor, cols * factor), mode="bilinear", align_corners=False
    )
    cropped = padded[..., : input_size[0], : input_size[1]]
    return nnf.interpolate(cropped, original_size, mode="bilinear", align_corners=False)[0]
