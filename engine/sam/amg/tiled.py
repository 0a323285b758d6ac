"""Thresholds of upsampled mask logits without upsampling every pixel.

`Sam.postprocess_masks` resizes low-res logits twice (bilinear, align_corners=False: to the
padded input, then, after the crop, to the original size). Both steps are separable linear maps
with non-negative weights that sum to one, so the whole thing is `Ry @ L @ Rx^T` for a fixed
H x h matrix Ry and W x w matrix Rx (built here by pushing identity matrices through the same
`interpolate` calls), and every original-size logit is a convex combination of the low-res
logits in its support. The output is cut into tiles of TILE_ROWS x TILE_COLS pixels; the support
of a tile is a small window of L. When the smallest logit of that window is above a threshold
(by a margin that covers float rounding) every pixel of the tile is above it; when the largest
is below, none is. Only tiles undecided for one of the thresholds are computed (two small
matrix products per tile), so the counts behind the stability score and the final masks cost
little more than the masks' boundaries.

The computed logits equal `postprocess_masks` up to float rounding order (about 1e-6), not bit
for bit: a pixel can only differ when its logit is within that of a threshold.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor

TILE_ROWS = 16
TILE_COLS = 32
MARGIN = 1e-3  # |float result - exact convex combination| is far below this for logits < 1e3


def _resize_matrix(low: int, padded: int, kept: int, out: int) -> Tensor:
    """out x low float64 matrix of `interpolate(low -> padded)[:kept] -> out` along one axis.

    Each step's weights come from `interpolate` itself on a float32 identity (so they are the
    float32 weights postprocess_masks uses); the product is taken in float64.
    """
    first = _step(low, padded)[:kept]  # kept x low
    return _step(kept, out) @ first


def _step(size: int, out: int) -> Tensor:
    """out x size float64 matrix of one float32 bilinear resize size -> out along an axis."""
    eye = torch.eye(size, dtype=torch.float32)[None, None]  # rows resized; columns: identity
    x = nnf.interpolate(eye, (out, size), mode="bilinear", align_corners=False)
    return x[0, 0].double()


@dataclass
class _Axis:
    """Tiling of one output axis: tile t reads low-res positions index[t] with weights[t]."""

    weights: Tensor  # tiles x tile x K float32 (zero where index was clamped or padded)
    index: Tensor  # tiles x K int64 low-res positions (clamped, so valid)
    valid: Tensor  # tiles x tile bool: inside the output (the last tile may be padded)
    used: int  # low-res positions any tile reads: 0 .. used - 1


def _axis(matrix: Tensor, tile: int, device: torch.device) -> _Axis:
    out, low = matrix.shape
    tiles = -(-out // tile)
    padded = torch.zeros((tiles * tile, low), dtype=torch.float64)
    padded[:out] = matrix
    blocks = padded.reshape(tiles, tile, low)
    touched = (blocks > 0).any(dim=1)  # tiles x low
    positions = torch.arange(low)
    first = torch.where(touched, positions, low).amin(dim=1)
    last = torch.where(touched, positions, -1).amax(dim=1)
    first = torch.minimum(first, last.clamp(min=0))  # a tile of padding rows only reads 1
    width = int((last - first).max()) + 1
    used = int(last.max()) + 1
    offsets = first[:, None] + torch.arange(width)
    inside = offsets < used  # every tile's weight is 0 from `used` on
    index = offsets.clamp(max=used - 1)
    gathered = torch.gather(blocks, 2, index[:, None, :].expand(tiles, tile, width))
    weights = torch.where(inside[:, None, :], gathered, torch.zeros(()))
    valid = (torch.arange(tiles * tile) < out).reshape(tiles, tile)
    return _Axis(
        weights=weights.to(device=device, dtype=torch.float32),
        index=index.to(device),
        valid=valid.to(device),
        used=used,
    )


@dataclass
class TileCounts:
    """Per mask: pixel counts above each threshold, and what the final mask needs."""

    counts: Tensor  # N x len(thresholds) int32
    above: Tensor  # N x tiles_y x tiles_x bool: the whole tile is above `mask_threshold`
    computed: Tensor  # T x 3 int64 (mask, tile_y, tile_x) of tiles computed pixel by pixel
    values: Tensor  # T x TILE_ROWS x TILE_COLS logits of those tiles


class TiledThresholds:
    """Counts and masks of `postprocess_masks(low_res) > threshold` for one image geometry."""

    def __init__(
        self,
        low_size: tuple[int, int],
        img_size: int,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        device: torch.device,
    ) -> None:
        self.original_size = original_size
        rows = _resize_matrix(low_size[0], img_size, input_size[0], original_size[0])
        cols = _resize_matrix(low_size[1], img_size, input_size[1], original_size[1])
        self.y = _axis(rows, TILE_ROWS, device)
        self.x = _axis(cols, TILE_COLS, device)
        self.tile_pixels = (self.y.valid[:, None, :, None] & self.x.valid[None, :, None, :]).sum(
            (-1, -2), dtype=torch.int32
        )  # tiles_y x tiles_x
        self.all_valid = bool(self.y.valid.all() and self.x.valid.all())

    def count(self, low_res: Tensor, thresholds: list[float], mask_threshold: float) -> TileCounts:
        """low_res N x h x w -> counts of upsampled logits > each threshold (mask_threshold
        among them), with the tiles that decide the final mask (see `masks`)."""
        low = low_res[:, : self.y.used, : self.x.used].float()
        lo, hi = self._window_bounds(low)  # N x tiles_y x tiles_x
        above = [lo > level + MARGIN for level in thresholds]
        undecided = torch.zeros_like(above[0])
        for level, level_above in zip(thresholds, above, strict=True):
            undecided |= ~level_above & (hi >= level - MARGIN)
        computed = torch.nonzero(undecided)  # T x 3
        values = self._tile_values(low, computed)
        if not self.all_valid and len(computed):
            valid = self.y.valid[computed[:, 1], :, None] & self.x.valid[computed[:, 2], None, :]
            values.masked_fill_(~valid, float("-inf"))
        # A computed tile that was decided for some level gives that decision again (its
        # logits are within rounding of the window's range), so computed tiles are simply
        # counted at every level and decided tiles only where nothing was computed.
        flat = values.flatten(1)
        counts = []
        for level, level_above in zip(thresholds, above, strict=True):
            decided = level_above & ~undecided
            count = (decided * self.tile_pixels).sum((1, 2), dtype=torch.int32)
            inside = (flat > level).sum(1, dtype=torch.int32)
            counts.append(count.index_add(0, computed[:, 0], inside))
        mask_level = thresholds.index(mask_threshold)
        return TileCounts(
            counts=torch.stack(counts, dim=1),
            above=above[mask_level],
            computed=computed,
            values=values,
        )

    def masks(self, tiles: TileCounts, index: Tensor, mask_threshold: float) -> Tensor:
        """The final H x W bool masks (logits > mask_threshold) of masks `index` (positions
        into the counted batch): decided tiles filled, computed tiles thresholded."""
        blocks = tiles.above[index][..., None, None].expand(-1, -1, -1, TILE_ROWS, TILE_COLS)
        blocks = blocks.contiguous()
        position = torch.full(
            (tiles.above.shape[0],), -1, dtype=torch.int64, device=tiles.above.device
        )
        position[index] = torch.arange(len(index), device=index.device)
        owner = position[tiles.computed[:, 0]]
        mine = owner >= 0
        where = tiles.computed[mine]
        blocks[owner[mine], where[:, 1], where[:, 2]] = tiles.values[mine] > mask_threshold
        count, tiles_y, tiles_x = blocks.shape[:3]
        full = blocks.permute(0, 1, 3, 2, 4)
        full = full.reshape(count, tiles_y * TILE_ROWS, tiles_x * TILE_COLS)
        return full[:, : self.original_size[0], : self.original_size[1]]

    def _window_bounds(self, low: Tensor) -> tuple[Tensor, Tensor]:
        """Min and max of low over each tile's support: N x tiles_y x tiles_x each."""
        rows = self.y.index
        lo = low[:, rows[:, 0], :]
        hi = lo.clone()
        for k in range(1, rows.shape[1]):
            part = low[:, rows[:, k], :]
            torch.minimum(lo, part, out=lo)
            torch.maximum(hi, part, out=hi)
        cols = self.x.index
        return lo[..., cols].amin(dim=-1), hi[..., cols].amax(dim=-1)

    def _tile_values(self, low: Tensor, computed: Tensor) -> Tensor:
        """Upsampled logits of tiles (mask, tile_y, tile_x): T x TILE_ROWS x TILE_COLS."""
        n, ty, tx = computed.unbind(dim=1)
        rows = self.y.index[ty][:, :, None]  # T x Kr x 1
        cols = self.x.index[tx][:, None, :]  # T x 1 x Kc
        patches = low[n[:, None, None], rows, cols]  # T x Kr x Kc
        return torch.bmm(torch.bmm(self.y.weights[ty], patches), self.x.weights[tx].transpose(1, 2))
