"""The weight reshaping that makes a random-weight SAM give image-following masks.

Shared by make_amg_goldens.py (reference venv) and bench/sam_amg.py (project venv): torch only.
Encoder blocks are damped (smooth embeddings), the decoder's transposed convolutions made
spatially uniform (no 4 x 4 texture), mask logits scaled up (stability scores spread over
[0, 1]) and IoU predictions shifted up by 1 (so the default 0.88 threshold keeps some).
"""

import torch


def structured_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (official key layout) with the changes above, as float32 tensors."""
    out = {}
    for name, tensor in state.items():
        value = tensor.float().clone()
        if name.startswith("image_encoder.blocks.") and (".attn.proj." in name or ".lin2." in name):
            value = value * 0.125
        elif name in (
            "mask_decoder.output_upscaling.0.weight",
            "mask_decoder.output_upscaling.3.weight",
        ):
            value = value.mean(dim=(2, 3), keepdim=True).expand_as(value).clone()
        elif name.startswith("mask_decoder.output_hypernetworks_mlps.") and ".layers.2." in name:
            value = value * 256.0
        elif name == "mask_decoder.iou_prediction_head.layers.2.bias":
            value = value + 1.0
        out[name] = value
    return out
