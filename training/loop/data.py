"""Training samples and what the trainer feeds the model: resized images, ground-truth masks in
the padded input frame, and a seeded choice of images and masks for every step.

Every random choice here is a pure function of ``(seed, slot)``, where a *slot* is the global
position of an image in the stream of training images (step, micro-batch, rank, index). So a
resumed run needs no sampler state, and one process taking 2N images per step sees exactly the
images, masks and prompts that two processes taking N each see together.
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from engine.sam.transforms import ResizeLongestSide
from training.loop.scenes import Scene

# Salts separating the independent draws made for one slot.
_MASK_SALT = 1
_PROMPT_SALT = 2
_SYMMETRY_SALT = 3


@dataclass(frozen=True)
class TrainSample:
    """One training image and its ground-truth instance masks.

    key: stable id (e.g. the image sha256), the embedding cache key; image: H x W x 3 uint8 RGB;
    masks: each H x W bool.
    """

    key: str
    image: NDArray[np.uint8]
    masks: tuple[NDArray[np.bool_], ...]

    def __post_init__(self) -> None:
        check_sample(self)


def check_sample(sample: TrainSample) -> None:
    """Raise ValueError naming the sample and the offending mask if shapes or dtypes are wrong."""
    image = sample.image
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"sample {sample.key!r}: image must be an H x W x 3 uint8 array")
    if image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"sample {sample.key!r}: image must be H x W x 3, got {image.shape}")
    for index, mask in enumerate(sample.masks):
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            raise ValueError(f"sample {sample.key!r}: mask {index} must be a bool array")
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"sample {sample.key!r}: mask {index} has shape {mask.shape}, "
                f"the image is {image.shape[:2]}"
            )


def image_key(image: NDArray[np.uint8]) -> str:
    """sha256 of the image's shape and pixels: the same pixels always get the same key."""
    digest = hashlib.sha256(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def samples_from_scenes(scenes: Iterable[Scene]) -> list[TrainSample]:
    """Synthetic scenes -> samples keyed by image sha256 (arrays shared, not copied)."""
    return [
        TrainSample(key=image_key(scene.image), image=scene.image, masks=tuple(scene.masks))
        for scene in scenes
    ]


@dataclass(frozen=True)
class TrainImage:
    """A sample with the masks that may be trained on (indices into ``sample.masks``)."""

    sample: TrainSample
    mask_ids: NDArray[np.int64]


def training_images(
    samples: Sequence[TrainSample], max_mask_fraction: float
) -> tuple[list[TrainImage], int]:
    """Keep the masks that have pixels and cover at most ``max_mask_fraction`` of their image
    (the paper drops larger ones); images left with none are skipped.

    Returns (images, masks dropped). Raises ValueError when there are no samples, a sample is
    malformed, or no mask is left.
    """
    if len(samples) == 0:
        raise ValueError("no training samples were given")
    images: list[TrainImage] = []
    dropped = 0
    total = 0
    for sample in samples:
        check_sample(sample)
        if not sample.masks:
            continue
        height, width = sample.image.shape[:2]
        # One pass over each mask; counting through a view keeps the arrays uncopied.
        areas = np.array([np.count_nonzero(mask) for mask in sample.masks], dtype=np.int64)
        keep = (areas > 0) & (areas <= max_mask_fraction * height * width)
        total += len(areas)
        dropped += int((~keep).sum())
        if keep.any():
            images.append(TrainImage(sample, np.flatnonzero(keep).astype(np.int64)))
    if not images:
        raise ValueError(
            f"no masks left to train on: {total} mask(s) in {len(samples)} sample(s), all empty "
            f"or covering more than {max_mask_fraction:.0%} of their image"
        )
    return images, dropped


def resize_image(image: NDArray[np.uint8], img_size: int) -> Tensor:
    """H x W x 3 uint8 -> 3 x h x w uint8 tensor with max(h, w) = img_size, resized exactly as
    ``SamPredictor.set_image`` does; ``Sam.preprocess`` then normalises and pads it."""
    resized = ResizeLongestSide(img_size).apply_image(image)
    return torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)


def _frame_index(old: int, new: int, padded: int) -> NDArray[np.intp]:
    """For each of ``padded`` input-frame rows (or columns), the nearest original row whose
    centre it falls in; rows past the resized image (``new``) are clipped and cleared later."""
    centres = (np.arange(padded, dtype=np.float64) + 0.5) * (old / new)
    return np.minimum(centres.astype(np.intp), old - 1)


def masks_to_frame(masks: Sequence[NDArray[np.bool_]], img_size: int, side: int) -> Tensor:
    """Ground-truth masks (each H x W bool, one image) -> M x side x side bool in the padded
    input frame: the mask resized like its image (longest side to ``img_size``, nearest pixel),
    zero-padded right and bottom, then each ``img_size / side`` square cell set when at least
    half of it is covered.

    The loss is computed at ``side`` (the decoder's 256 x 256 low-res size for the official
    models) rather than at 1024 x 1024: 16x fewer pixels in every focal, dice, IoU and
    error-region computation of the 11 iterations, and the logits need no upsampling.
    """
    if img_size % side != 0:
        raise ValueError(f"mask side {side} must divide the input size {img_size}")
    if not masks:
        return torch.zeros((0, side, side), dtype=torch.bool)
    factor = img_size // side
    height, width = masks[0].shape
    new_h, new_w = ResizeLongestSide.get_preprocess_shape(height, width, img_size)
    cells_h, cells_w = -(-new_h // factor), -(-new_w // factor)  # cells touching the image
    rows = _frame_index(height, new_h, cells_h * factor)
    cols = _frame_index(width, new_w, cells_w * factor)
    # Separable: gather the rows and count them per cell, then the same for the columns.
    gathered = np.stack([mask[rows] for mask in masks])  # M x cells_h*factor x W
    gathered[:, new_h:] = False  # padding rows
    row_counts = gathered.reshape(len(masks), cells_h, factor, width).sum(2, dtype=np.uint16)
    cell_cols = row_counts[:, :, cols]
    cell_cols[:, :, new_w:] = 0  # padding columns
    counts = cell_cols.reshape(len(masks), cells_h, cells_w, factor).sum(3, dtype=np.uint16)
    out = torch.zeros((len(masks), side, side), dtype=torch.bool)
    out[:, :cells_h, :cells_w] = torch.from_numpy(2 * counts.astype(np.int32) >= factor * factor)
    return out


def _seed_int(*words: int) -> int:
    """A well-mixed 63-bit seed from a few non-negative integers."""
    state = np.random.SeedSequence(list(words)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@lru_cache(maxsize=8)
def _epoch_order(seed: int, epoch: int, count: int) -> NDArray[np.int64]:
    return np.random.default_rng([seed, epoch, count]).permutation(count)


def slot_image(seed: int, slot: int, count: int) -> int:
    """The image index at global slot ``slot``: images are visited in a fresh seeded order
    every epoch, so each is seen once per ``count`` slots."""
    epoch, position = divmod(slot, count)
    return int(_epoch_order(seed, epoch, count)[position])


def slot_masks(seed: int, slot: int, mask_ids: NDArray[np.int64], limit: int) -> NDArray[np.int64]:
    """Up to ``limit`` of ``mask_ids`` drawn without replacement for this slot, in draw order."""
    if len(mask_ids) <= limit:
        return mask_ids
    rng = np.random.default_rng([seed, slot, _MASK_SALT])
    return mask_ids[rng.choice(len(mask_ids), size=limit, replace=False)]


def slot_symmetry(seed: int, slot: int) -> int:
    """Which of the 8 grid symmetries (``apply_symmetry``) this slot's image is turned by."""
    return int(np.random.default_rng([seed, slot, _SYMMETRY_SALT]).integers(8))


def apply_symmetry(array: NDArray[Any], symmetry: int) -> NDArray[Any]:
    """H x W (x C) array turned by symmetry 0-7: ``symmetry % 4`` quarter turns, then a
    left-right mirror when ``symmetry >= 4``; 0 returns the array itself."""
    if not 0 <= symmetry < 8:
        raise ValueError(f"symmetry must be in 0..7, got {symmetry}")
    if symmetry == 0:
        return array
    turned = np.rot90(array, symmetry % 4, axes=(0, 1))
    if symmetry >= 4:
        turned = turned[:, ::-1]
    return np.ascontiguousarray(turned)


def slot_prompt_seed(seed: int, slot: int) -> int:
    """Seed of the generator that draws every simulated prompt for this slot's masks."""
    return _seed_int(seed, slot, _PROMPT_SALT)


def step_slots(
    step: int, micro: int, *, images_per_step: int, accumulate: int, rank: int, world: int
) -> range:
    """Global slots of one rank's micro-batch ``micro`` in optimizer step ``step`` (0-based).

    Slots are laid out step-major, then micro-batch, then rank, so ranks shard the images of a
    step and (world, images_per_step, accumulate) = (2, N, 1), (1, 2N, 1) and (1, N, 2) visit
    the same slots in one step.
    """
    start = ((step * accumulate + micro) * world + rank) * images_per_step
    return range(start, start + images_per_step)
