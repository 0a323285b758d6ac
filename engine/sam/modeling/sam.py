"""`Sam`: the image encoder, prompt encoder and mask decoder assembled from parts passed in."""

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from engine.sam.modeling.image_encoder import ImageEncoderViT
from engine.sam.modeling.mask_decoder import MaskDecoder
from engine.sam.modeling.prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """Segment Anything. Logits above `mask_threshold` (0.0) are foreground.

    `pixel_mean` / `pixel_std` are non-persistent buffers: they are not in the official
    checkpoints, so those load with strict keys.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"
    pixel_mean: Tensor
    pixel_std: Tensor

    def __init__(
        self,
        *,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self._pixel_stats = (tuple(pixel_mean), tuple(pixel_std))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    def reset_pixel_stats(self, device: torch.device | str = "cpu") -> None:
        """Re-create the normalisation buffers (after building on the meta device)."""
        mean, std = self._pixel_stats
        self.pixel_mean = torch.tensor(mean, device=device).view(-1, 1, 1)
        self.pixel_std = torch.tensor(std, device=device).view(-1, 1, 1)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        """Side of the square model input (1024 for the official models)."""
        return self.image_encoder.img_size

    def preprocess(self, x: Tensor) -> Tensor:
        """x: B x 3 x h x w resized RGB (0-255) -> normalised, zero-padded B x 3 x 1024 x 1024."""
        x = (x - self.pixel_mean) / self.pixel_std
        height, width = x.shape[-2:]
        return nnf.pad(x, (0, self.img_size - width, 0, self.img_size - height))

    def postprocess_masks(
        self, masks: Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
    ) -> Tensor:
        """Low-res logits B x C x 256 x 256 -> B x C x H x W logits at the original size.

        Upsampled to the padded model input, cropped to the resized image (`input_size`), then
        resized to `original_size`, bilinear without corner alignment.
        """
        masks = nnf.interpolate(
            masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        masks = masks[..., : input_size[0], : input_size[1]]
        return nnf.interpolate(masks, original_size, mode="bilinear", align_corners=False)

    def forward(
        self, batched_input: list[dict[str, Any]], multimask_output: bool
    ) -> list[dict[str, Tensor]]:
        """End-to-end prediction for a batch of images, each with its own prompts.

        Each record: "image" 3 x h x w (already resized, max side 1024), "original_size"
        (H, W), and optionally "point_coords" B x N x 2 with "point_labels" B x N, "boxes"
        B x 4, "mask_inputs" B x 1 x 256 x 256 (all in the resized frame). Returns per image
        "masks" B x C x H x W bool, "iou_predictions" B x C, "low_res_logits" B x C x 256 x 256.
        Gradients flow (the official version runs under no_grad; wrap the call to match).
        """
        images = torch.stack([self.preprocess(record["image"]) for record in batched_input])
        embeddings = self.image_encoder(images)
        outputs = []
        for record, embedding in zip(batched_input, embeddings, strict=True):
            points = None
            if "point_coords" in record:
                points = (record["point_coords"], record["point_labels"])
            sparse, dense = self.prompt_encoder(
                points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
            )
            low_res, iou = self.mask_decoder(
                image_embeddings=embedding.unsqueeze(0),
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            masks = self.postprocess_masks(
                low_res,
                input_size=tuple(record["image"].shape[-2:]),
                original_size=tuple(record["original_size"]),
            )
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou,
                    "low_res_logits": low_res,
                }
            )
        return outputs
