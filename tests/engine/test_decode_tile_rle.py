"""Run lengths built from tiles (engine.sam.tile_rle) give pycocotools' RLE byte for byte."""

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from engine.sam.tile_rle import (
    TILE_COLS,
    TILE_ROWS,
    pack_tile_columns,
    set_bits,
    tile_run_counts,
    unpack_tile_columns,
)


def random_plan(rng: np.random.Generator, height: int, width: int, smooth: bool):
    """Random tile decisions and boundary tiles, and the full mask they stand for."""
    tiles_y, tiles_x = -(-height // TILE_ROWS), -(-width // TILE_COLS)
    full = rng.random((tiles_y, tiles_x)) < rng.random()
    boundary = np.argwhere(rng.random((tiles_y, tiles_x)) < rng.random())
    shape = (len(boundary), TILE_ROWS, TILE_COLS)
    if smooth:  # few changes down each column, as along a real mask's boundary
        bits = np.cumsum(rng.random(shape) < 0.05, axis=1) % 2 == 1
    else:
        bits = rng.random(shape) < rng.random()
    blocks = np.repeat(np.repeat(full, TILE_ROWS, axis=0), TILE_COLS, axis=1)
    for (tile_y, tile_x), tile_bits in zip(boundary, bits, strict=True):
        blocks[
            tile_y * TILE_ROWS : (tile_y + 1) * TILE_ROWS,
            tile_x * TILE_COLS : (tile_x + 1) * TILE_COLS,
        ] = tile_bits
    return full, boundary, bits, blocks[:height, :width]


def pycocotools_counts(counts: list[int], height: int, width: int) -> bytes:
    encoded = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return bytes(encoded["counts"])


def expected_counts(mask: np.ndarray) -> bytes:
    return bytes(coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))["counts"])


def test_every_small_shape_gives_pycocotools_rle():
    rng = np.random.default_rng(0)
    for height in range(1, 70):
        for width in range(1, 40, 3):
            full, boundary, bits, mask = random_plan(rng, height, width, smooth=height % 2 == 0)
            counts = tile_run_counts(
                full=full,
                boundary=boundary,
                words=pack_tile_columns(bits),
                height=height,
                width=width,
            )
            assert sum(counts) == height * width
            assert pycocotools_counts(counts, height, width) == expected_counts(mask)


@pytest.mark.parametrize(
    "size", [(1, 1), (10000, 300), (300, 10000), (4000, 6000), (1000, 1500), (32, 16), (33, 17)]
)
@pytest.mark.parametrize("smooth", [True, False])
def test_large_and_edge_shapes_give_pycocotools_rle(size, smooth):
    rng = np.random.default_rng(sum(size))
    full, boundary, bits, mask = random_plan(rng, size[0], size[1], smooth)
    counts = tile_run_counts(
        full=full, boundary=boundary, words=pack_tile_columns(bits), height=size[0], width=size[1]
    )
    assert pycocotools_counts(counts, *size) == expected_counts(mask)


@pytest.mark.parametrize("value", [False, True])
def test_constant_masks_and_a_first_true_pixel(value):
    full = np.full((2, 3), value)
    empty = np.zeros((0, 2), dtype=np.int64)
    no_bits = np.zeros((0, TILE_ROWS, TILE_COLS), dtype=bool)
    counts = tile_run_counts(
        full=full, boundary=empty, words=pack_tile_columns(no_bits), height=40, width=40
    )
    assert counts == ([0, 1600] if value else [1600])


def test_tiles_that_do_not_cover_the_mask_are_refused():
    with pytest.raises(ValueError, match="do not cover"):
        tile_run_counts(
            full=np.zeros((1, 1), dtype=bool),
            boundary=np.zeros((0, 2), dtype=np.int64),
            words=np.zeros((0, TILE_COLS), dtype=np.uint32),
            height=TILE_ROWS + 1,
            width=1,
        )


def test_tile_columns_pack_and_unpack_row_by_row():
    bits = np.random.default_rng(5).random((7, TILE_ROWS, TILE_COLS)) < 0.5
    words = pack_tile_columns(bits)
    assert words.shape == (7, TILE_COLS)
    assert words.dtype == np.uint32
    tile, row, col = 3, 9, 4
    assert bool((int(words[tile, col]) >> row) & 1) == bits[tile, row, col]
    assert np.array_equal(unpack_tile_columns(words), bits)


def test_set_bits_finds_every_bit_of_every_word():
    rng = np.random.default_rng(5)
    words = rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32)
    words[:40] = np.uint32(1) << np.arange(32, dtype=np.uint32).repeat(2)[:40]  # single bits
    words[40:50] = [0, 0xFFFFFFFF, 0x80000000, 1, 0, 3, 0xC0000000, 0x55555555, 0xAAAAAAAA, 7]
    owners, bits = set_bits(words)
    expected = np.unpackbits(
        words.astype("<u4").view(np.uint8).reshape(-1, 4), axis=1, bitorder="little"
    )
    found = np.zeros_like(expected)
    found[owners, bits] = 1
    assert len(owners) == int(expected.sum())  # each bit once
    assert np.array_equal(found, expected)
    assert set_bits(np.zeros(0, dtype=np.uint32))[0].shape == (0,)
