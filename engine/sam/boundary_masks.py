"""The final masks of `SamPredictor.predict`, computed only near their boundaries, bit for bit,
and their COCO RLE without the full-resolution mask.

`predict` thresholds ``postprocess_masks(low_res) > 0``: two bilinear upsamplings of the
256 x 256 logits (to the padded 1024 square, then, cropped, to the original size), every pixel
of every candidate. Both are linear per axis, so each output logit is a combination, with
non-negative weights, of the low-res logits in a small window. The output is cut into tiles
of TILE_ROWS x TILE_COLS pixels:

* a tile whose window holds only logits > TINY is all True, and one whose window holds only
  logits <= 0 all False, exactly, for torch's float32 arithmetic too: every product with a
  source keeps its sign, and the first source of each step has a weight >= 2**-24, so sums of
  positive terms stay positive (TINY keeps them far from underflow) and sums of non-positive
  ones never exceed 0, whatever the rounding;
* every other ("boundary") tile is computed as two small matrix products in float32. That
  value and torch's differ by less than ``SAFETY * 2**-24 * max|low_res|`` (two resizes of at
  most four rounded multiply-adds each, a product of at most ~30 terms, weights rounded once;
  every intermediate is bounded by the largest logit, about 35 units of 2**-24 in all), so a
  value beyond the bound has torch's sign, and the rare pixels within it are recomputed with
  torch's exact arithmetic (`engine.sam.exact_bilinear`).

So `TilePlan` masks equal ``predict``'s pixel for pixel (tests/engine/test_decode_boundary_
masks.py compares them on many sizes and prompts). This is the idea of
`engine.sam.amg.tiled.TiledThresholds`, which the generator uses for its score counts; it is
not reused here because the decode path needs other outputs from it (exact signs at a zero
threshold instead of a 1e-3 margin, and tile decisions for the RLE instead of counts and a
full mask), and its full-mask assembly and padding fill were most of its time here.

`BoundaryMasks.plan` answers None, and the caller upsamples everything as `predict` does,
when most tiles are boundary tiles (noise-like logits, e.g. from untrained weights: the full
upsampling is then cheaper) or when the exact emulation does not match this torch build.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pycocotools import mask as coco_mask
from torch import Tensor

from engine.sam.exact_bilinear import (
    AxisWeights,
    axis_weights,
    combine,
    emulation_matches_torch,
    kernel_kind,
    resize_pixels,
)
from engine.sam.tile_rle import (
    TILE_COLS,
    TILE_ROWS,
    pack_transposed_tiles,
    tile_run_counts,
    unpack_tile_columns,
)

# Positive sources above this stay positive through both resizes: each output is at least one
# source times four weights of at least 2**-24 each, 1e-6 * 2**-96 > 1.2e-38 (no underflow,
# even with denormals flushed).
TINY = 1e-6
SAFETY = 64.0  # bound / (2**-24 * max|logit|); the error analysis above needs about 35
MAX_BOUNDARY_FRACTION = 0.5  # of all tiles: beyond it the full upsampling is cheaper
# Sign changes between horizontal low-res neighbours, per pair: noise-like logits have about
# 0.5 and give boundary tiles nearly everywhere, real masks a few percent. Above this, the plan
# is refused before the window counts are built (they cost ~0.7 ms for nothing).
MAX_SIGN_CHANGE_FRACTION = 0.25


def _composed_matrix(first: AxisWeights, second: AxisWeights, low: int) -> np.ndarray:
    """size_out x low float64 matrix of both resizes along one axis (the crop between them
    only limits which intermediate positions `second` reads): at most four sources a row,
    written directly rather than as a product of the two dense matrices."""
    matrix = np.zeros((len(second.i0), low), dtype=np.float64)
    rows = np.arange(len(second.i0))
    for middle, outer in ((second.i0, second.w0), (second.i1, second.w1)):
        for source, inner in ((first.i0, first.w0), (first.i1, first.w1)):
            weight = outer.astype(np.float64) * inner[middle].astype(np.float64)
            np.add.at(matrix, (rows, source[middle]), weight)
    return matrix


@dataclass(frozen=True)
class _Tiling:
    """One output axis cut in tiles of `tile` positions, against the low-res positions."""

    first: np.ndarray  # tiles int64: first low-res position with a non-zero weight
    last: np.ndarray  # tiles int64: the last one
    index: Tensor  # tiles x K int64: low-res positions first .. first + K - 1 (clamped)
    weights: Tensor  # tiles x tile x K float32 (0 for clamped positions and padding)
    windows: Tensor  # tiles x low float32: 1 at the low-res positions first .. last


def _tiling(matrix: np.ndarray, tile: int) -> _Tiling:
    out, low = matrix.shape
    tiles = -(-out // tile)
    padded = np.zeros((tiles * tile, low), dtype=np.float64)
    padded[:out] = matrix
    blocks = padded.reshape(tiles, tile, low)
    touched: np.ndarray = np.asarray((blocks > 0).any(axis=1))  # tiles x low; never empty
    first = touched.argmax(axis=1)
    last = low - 1 - touched[:, ::-1].argmax(axis=1)
    width = int((last - first).max()) + 1
    offsets = first[:, None] + np.arange(width)
    index = np.minimum(offsets, low - 1)
    gathered = np.take_along_axis(
        blocks, np.broadcast_to(index[:, None, :], (*blocks.shape[:2], width)), 2
    )
    weights = np.where((offsets < low)[:, None, :], gathered, 0.0)
    positions = np.arange(low)
    windows = (positions >= first[:, None]) & (positions <= last[:, None])
    return _Tiling(
        first=first,
        last=last,
        index=torch.from_numpy(index),
        weights=torch.from_numpy(weights.astype(np.float32)),
        windows=torch.from_numpy(windows.astype(np.float32)),
    )


@dataclass(frozen=True)
class TilePlan:
    """The masks of one decode as tile decisions plus the pixels of the boundary tiles."""

    full: np.ndarray  # C x tiles_y x tiles_x bool: the tile is all True (unless boundary)
    boundary: np.ndarray  # T x 3 int64 (mask, tile_y, tile_x)
    words: np.ndarray  # T x TILE_COLS uint32: the boundary tiles' pixels, bit r = row r


class BoundaryMasks:
    """``postprocess_masks(low_res) > 0`` for one image geometry, on the CPU."""

    def __init__(
        self,
        *,
        low_size: tuple[int, int],
        image_size: int,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> None:
        self.height, self.width = int(original_size[0]), int(original_size[1])
        self.image_size = int(image_size)
        self.low_size = (int(low_size[0]), int(low_size[1]))
        kept = (int(input_size[0]), int(input_size[1]))
        self.first = tuple(axis_weights(side, self.image_size) for side in self.low_size)
        self.second = (axis_weights(kept[0], self.height), axis_weights(kept[1], self.width))
        matrices = [
            _composed_matrix(first, second, low_side)
            for first, second, low_side in zip(self.first, self.second, self.low_size, strict=True)
        ]
        self.rows = _tiling(matrices[0], TILE_ROWS)
        self.cols = _tiling(matrices[1], TILE_COLS)
        self.tiles = (len(self.rows.first), len(self.cols.first))
        # Low-res rows / columns any tile reads (the rest is padding cropped away).
        self.used = (int(self.rows.last.max()) + 1, int(self.cols.last.max()) + 1)
        # Window sums as two matrix products: tiles_y x used_h and used_w x tiles_x.
        self.row_windows = self.rows.windows[:, : self.used[0]].contiguous()
        self.col_windows = self.cols.windows[:, : self.used[1]].T.contiguous()
        # The second product of each boundary tile, laid out for bmm: tiles_y x Ky x TILE_ROWS.
        self.rows_weights_t = self.rows.weights.transpose(1, 2).contiguous()

    def plan(self, low_res: Tensor) -> TilePlan | None:
        """low_res C x h x w float32 (CPU) -> the masks' tile plan, or None when the caller
        should upsample everything instead (see the module docstring)."""
        low = low_res.detach().float().contiguous()
        channels = int(low.shape[0])
        if not emulation_matches_torch(channels):
            return None
        low_np = low.numpy()
        signs = low_np[:, : self.used[0], : self.used[1]] > 0
        changes = np.count_nonzero(signs[:, :, 1:] != signs[:, :, :-1])
        if changes > MAX_SIGN_CHANGE_FRACTION * signs[:, :, 1:].size:
            return None
        positive, non_zero = self._window_counts(low)
        area = (self.rows.last - self.rows.first + 1)[:, None] * (
            self.cols.last - self.cols.first + 1
        )[None, :]
        full = positive == area
        boundary = np.argwhere(~full & (non_zero > 0))
        if len(boundary) > MAX_BOUNDARY_FRACTION * full.size:
            return None
        return TilePlan(full=full, boundary=boundary, words=self._boundary_words(low, boundary))

    def _window_counts(self, low: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Two C x tiles_y x tiles_x int32 arrays: how many low-res logits in each tile's
        window are > TINY, and > 0. Sums of 0/1 in float32 are exact (at most 2**16 terms)."""
        used = low[:, : self.used[0], : self.used[1]]
        flags = torch.cat((used > TINY, used > 0)).float()  # 2C x used_h x used_w
        counts = torch.matmul(torch.matmul(self.row_windows, flags), self.col_windows)
        positive, non_zero = counts.to(torch.int32).numpy().reshape(2, len(low), *self.tiles)
        return positive, non_zero

    def _boundary_words(self, low: Tensor, boundary: np.ndarray) -> np.ndarray:
        """T x TILE_COLS uint32: the thresholded pixels of the boundary tiles, by column."""
        if len(boundary) == 0:
            return np.zeros((0, TILE_COLS), dtype=np.uint32)
        mask, tile_y, tile_x = torch.from_numpy(boundary).unbind(dim=1)
        height, width = int(low.shape[1]), int(low.shape[2])
        # Each tile's window as flat positions in low (cheaper than indexing by three tensors).
        flat = (self.rows.index[tile_y] * width)[:, None, :] + (
            self.cols.index[tile_x] + mask[:, None] * (height * width)
        )[:, :, None]
        patches = low.reshape(-1)[flat]  # T x Kx x Ky: transposed tiles
        values = torch.bmm(
            torch.bmm(self.cols.weights[tile_x], patches), self.rows_weights_t[tile_y]
        )  # T x TILE_COLS x TILE_ROWS, each tile transposed (columns are what the RLE walks)
        peak = low.abs().flatten(1).amax(dim=1)  # C: bounds every value of both resizes
        bound = (peak * (SAFETY * 2.0**-24))[mask]
        # Only the few tiles holding a value within the bound are searched pixel by pixel.
        (suspects,) = torch.nonzero(values.abs().flatten(1).amin(dim=1) <= bound, as_tuple=True)
        if len(suspects):
            close = values[suspects].abs() <= bound[suspects, None, None]
            within, col, row = torch.nonzero(close, as_tuple=True)
            tile = suspects[within]
            y = tile_y[tile] * TILE_ROWS + row
            x = tile_x[tile] * TILE_COLS + col
            inside = (y < self.height) & (x < self.width)  # padding is cut off anyway
            tile, col, row, y, x = tile[inside], col[inside], row[inside], y[inside], x[inside]
            exact = self.exact_values(low.numpy(), mask[tile].numpy(), y.numpy(), x.numpy())
            values[tile, col, row] = torch.from_numpy(exact)
        return pack_transposed_tiles((values > 0).numpy())

    def exact_values(
        self, low: np.ndarray, channel: np.ndarray, y: np.ndarray, x: np.ndarray
    ) -> np.ndarray:
        """``postprocess_masks`` logits at pixels (channel[k], y[k], x[k]) of the original
        size, bit for bit: the four intermediate values each reads, then the second resize."""
        channels = int(low.shape[0])
        first_kind = kernel_kind(channels, (self.image_size, self.image_size))
        second_kind = kernel_kind(channels, (self.height, self.width))
        rows, cols = self.second
        first_rows, first_cols = self.first
        y0, y1, x0, x1 = rows.i0[y], rows.i1[y], cols.i0[x], cols.i1[x]

        def intermediate(at_y: np.ndarray, at_x: np.ndarray) -> np.ndarray:
            return resize_pixels(low, first_rows, first_cols, channel, at_y, at_x, first_kind)

        corners = (
            intermediate(y0, x0),
            intermediate(y0, x1),
            intermediate(y1, x0),
            intermediate(y1, x1),
        )
        return combine(corners, (rows.w0[y], rows.w1[y]), (cols.w0[x], cols.w1[x]), second_kind)

    # --- outputs -------------------------------------------------------------------------------

    def masks(self, plan: TilePlan) -> np.ndarray:
        """C x H x W bool masks of a plan (for PNG answers and tests)."""
        channels, tiles_y, tiles_x = plan.full.shape
        blocks = np.repeat(np.repeat(plan.full, TILE_ROWS, axis=1), TILE_COLS, axis=2)
        blocks = blocks.reshape(channels, tiles_y, TILE_ROWS, tiles_x, TILE_COLS)
        mask, tile_y, tile_x = plan.boundary.T
        blocks = blocks.transpose(0, 1, 3, 2, 4).copy()
        blocks[mask, tile_y, tile_x] = unpack_tile_columns(plan.words)
        full = blocks.transpose(0, 1, 3, 2, 4).reshape(
            channels, tiles_y * TILE_ROWS, tiles_x * TILE_COLS
        )
        return full[:, : self.height, : self.width]

    def coco_rles(self, plan: TilePlan) -> list[dict[str, Any]]:
        """Each mask's COCO compressed RLE (``{"size": [H, W], "counts": str}``)."""
        rles = []
        for index in range(plan.full.shape[0]):
            mine = plan.boundary[:, 0] == index
            counts = tile_run_counts(
                full=plan.full[index],
                boundary=plan.boundary[mine, 1:],
                words=plan.words[mine],
                height=self.height,
                width=self.width,
            )
            encoded = coco_mask.frPyObjects(
                {"size": [self.height, self.width], "counts": counts}, self.height, self.width
            )
            rles.append({"size": [self.height, self.width], "counts": encoded["counts"].decode()})
        return rles
