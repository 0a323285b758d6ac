"""Tiled thresholds (engine/sam/amg/tiled.py) against `Sam.postprocess_masks` + thresholds."""

import pytest
import torch

from engine.sam.amg.tiled import TILE_COLS, TILE_ROWS, TiledThresholds
from engine.sam.build import build_sam
from engine.sam.modeling import Sam

LEVELS = [1.0, -1.0, 0.0]
ROUNDING = 1e-4  # a pixel this close to a threshold may fall either way (summation order)


@pytest.fixture(scope="module")
def tiny_sam() -> Sam:
    return build_sam("vit_tiny")


def smooth_logits(count: int, seed: int) -> torch.Tensor:
    """count x 256 x 256 logits with large decided areas and boundaries, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn((count, 1, 8, 8), generator=generator) * 6
    fine = torch.nn.functional.interpolate(coarse, (256, 256), mode="bilinear")[:, 0]
    return fine + 0.5 * torch.randn((count, 256, 256), generator=generator)


@pytest.mark.parametrize(
    ("input_size", "original_size"),
    [
        ((768, 1024), (480, 640)),  # tiles fit exactly
        ((683, 1024), (200, 300)),  # padded last tiles
        ((1024, 576), (1280, 720)),
        ((1024, 1024), (64, 64)),
        ((1, 1024), (1, 5000)),
    ],
)
def test_counts_and_masks_equal_thresholded_postprocess_masks(
    tiny_sam: Sam, input_size: tuple[int, int], original_size: tuple[int, int]
) -> None:
    low_res = smooth_logits(5, seed=sum(original_size))
    logits = tiny_sam.postprocess_masks(low_res[None], input_size, original_size)[0]
    tiles = TiledThresholds((256, 256), 1024, input_size, original_size, torch.device("cpu"))

    counted = tiles.count(low_res, LEVELS, 0.0)
    for column, level in enumerate(LEVELS):
        expected = (logits > level).sum((-1, -2))
        near = ((logits - level).abs() < ROUNDING).sum((-1, -2))
        assert ((counted.counts[:, column] - expected).abs() <= near).all()
    index = torch.tensor([3, 0])
    masks = tiles.masks(counted, index, 0.0)
    assert masks.shape == (2, *original_size)
    differ = masks != (logits[index] > 0.0)
    assert not (differ & (logits[index].abs() >= ROUNDING)).any()


def test_only_tiles_near_a_threshold_are_computed(tiny_sam: Sam) -> None:
    low_res = smooth_logits(2, seed=1)
    low_res[1] = 20.0  # everywhere far above every level: nothing to compute
    tiles = TiledThresholds((256, 256), 1024, (768, 1024), (480, 640), torch.device("cpu"))
    counted = tiles.count(low_res, LEVELS, 0.0)
    assert counted.counts[1].tolist() == [480 * 640] * 3
    assert (counted.computed[:, 0] == 0).all()
    assert 0 < len(counted.computed) < 0.6 * (480 // TILE_ROWS) * (640 // TILE_COLS)
    assert tiles.masks(counted, torch.tensor([1]), 0.0).all()


def test_no_masks_gives_an_empty_batch(tiny_sam: Sam) -> None:
    tiles = TiledThresholds((256, 256), 1024, (683, 1024), (200, 300), torch.device("cpu"))
    counted = tiles.count(torch.zeros((0, 256, 256)), LEVELS, 0.0)
    assert counted.counts.shape == (0, 3)
    assert tiles.masks(counted, torch.zeros(0, dtype=torch.int64), 0.0).shape == (0, 200, 300)
