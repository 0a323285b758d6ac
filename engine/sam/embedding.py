"""Batched image embeddings, to be stored once and fed to any number of predictors.

    embeddings = embed_images(model, [image_a, image_b], precision="bf16", batch_size=8)
    predictor.set_embedding(embeddings[0].embedding, embeddings[0].original_size,
                            embeddings[0].input_size)          # or set_image_embedding(...)

Each image is resized and normalised exactly as `SamPredictor.set_image` does (longest side to
the model input, Pillow bilinear, zero padding), so an `ImageEmbedding` gives the same masks as
`set_image` on the same image. The encoder runs `batch_size` images at a time on the model's
device; the result is always float32 on the CPU, whatever the precision.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.sam.device import check_precision, precision_context
from engine.sam.modeling import Sam
from engine.sam.prompts import as_rgb_uint8
from engine.sam.transforms import ResizeLongestSide


@dataclass(frozen=True)
class ImageEmbedding:
    """One image's encoder output and the sizes the predictor needs to map prompts and masks.

    embedding: 1 x 256 x 64 x 64 float32 on the CPU (1 x C x 64 x 64 for small test configs);
    original_size: (H, W) of the image given; input_size: (h, w) after the longest-side resize.
    """

    embedding: Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def _resized_tensor(image: np.ndarray, transform: ResizeLongestSide) -> tuple[Tensor, int, int]:
    """H x W x 3 uint8 -> (3 x h x w uint8 tensor, H, W)."""
    rgb = as_rgb_uint8(image, "RGB")
    resized = transform.apply_image(rgb)
    tensor = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)
    return tensor, int(rgb.shape[0]), int(rgb.shape[1])


@torch.no_grad()
def encode_batch(model: Sam, resized: Sequence[Tensor], *, precision: str = "fp32") -> Tensor:
    """Run the encoder on already-resized images: list of 3 x h x w (0-255, max(h, w) = 1024).

    Returns B x C x 64 x 64 float32 on the model's device.
    """
    check_precision(precision)
    device = model.device
    batch = torch.stack([model.preprocess(image.to(device).float()) for image in resized])
    with precision_context(device, precision):
        features = model.image_encoder(batch)
    return features.float()


def embed_images(
    model: Sam,
    images: Sequence[np.ndarray],
    *,
    precision: str = "fp32",
    batch_size: int = 4,
) -> list[ImageEmbedding]:
    """Embed H x W x 3 uint8 RGB images, `batch_size` per encoder call, on the model's device.

    precision: "fp32" (default, parity with the official model) or "bf16" (autocast on CPU and
    CUDA; the embedding is returned as float32). Raises ValueError for an unknown precision,
    a batch_size < 1, or an image that is not H x W x 3 uint8 (grayscale / RGBA are converted
    as in `SamPredictor.set_image`).
    """
    check_precision(precision)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(images, np.ndarray):
        raise ValueError("images must be a sequence of H x W x 3 arrays, not one array")
    transform = ResizeLongestSide(model.image_encoder.img_size)
    prepared = [_resized_tensor(image, transform) for image in images]
    results: list[ImageEmbedding] = []
    for start in range(0, len(prepared), batch_size):
        chunk = prepared[start : start + batch_size]
        features = encode_batch(model, [tensor for tensor, _, _ in chunk], precision=precision)
        features = features.cpu()
        for index, (tensor, height, width) in enumerate(chunk):
            results.append(
                ImageEmbedding(
                    embedding=features[index : index + 1].clone(),
                    original_size=(height, width),
                    input_size=(int(tensor.shape[1]), int(tensor.shape[2])),
                )
            )
    return results
