"""Shape families of the synthetic scenes: full (unoccluded) masks drawn on a pixel grid.

Each function takes the generator, the grid and a centre ``(cy, cx)`` with a size ``r`` in
pixels, and draws all its own random parameters, so a family's look lives in one place.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates of the whole canvas, shared by every shape and texture."""

    yy: FloatArray
    xx: FloatArray

    @property
    def height(self) -> int:
        return int(self.yy.shape[0])

    @property
    def width(self) -> int:
        return int(self.yy.shape[1])

    @property
    def side(self) -> int:
        return min(self.height, self.width)

    def local(self, cy: float, cx: float, theta: float) -> tuple[FloatArray, FloatArray]:
        """Coordinates in a frame centred at ``(cy, cx)`` and rotated by ``theta``."""
        dy = self.yy - cy
        dx = self.xx - cx
        cos, sin = math.cos(theta), math.sin(theta)
        return dx * cos + dy * sin, -dx * sin + dy * cos


def _ellipse(rng: np.random.Generator, grid: Grid, cy: float, cx: float, r: float) -> BoolArray:
    u, v = grid.local(cy, cx, rng.uniform(0, math.pi))
    a, b = r, r * rng.uniform(0.45, 1.0)
    result: BoolArray = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    return result


def _ring(rng: np.random.Generator, grid: Grid, cy: float, cx: float, r: float) -> BoolArray:
    u, v = grid.local(cy, cx, rng.uniform(0, math.pi))
    a, b = r, r * rng.uniform(0.6, 1.0)
    # The hole keeps at least ~1.5 px of radius so it survives rasterisation.
    thickness = min(max(2.0, b * rng.uniform(0.2, 0.5)), max(b - 1.5, 1.0))
    outer = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    inner = (u / (a - thickness)) ** 2 + (v / (b - thickness)) ** 2 < 1.0
    result: BoolArray = outer & ~inner
    return result


def _blob(rng: np.random.Generator, grid: Grid, cy: float, cx: float, r: float) -> BoolArray:
    dy, dx = grid.yy - cy, grid.xx - cx
    theta = np.arctan2(dy, dx)
    boundary = np.ones_like(theta)
    for harmonic in (2, 3, 4, 5):
        boundary += rng.uniform(0.0, 0.12) * np.cos(harmonic * theta + rng.uniform(0, 2 * math.pi))
    result: BoolArray = np.hypot(dy, dx) <= r * boundary
    return result


def _arc(rng: np.random.Generator, grid: Grid, cy: float, cx: float, r: float) -> BoolArray:
    dy, dx = grid.yy - cy, grid.xx - cx
    width = rng.uniform(2.0, 4.5)
    start, span = rng.uniform(0, 2 * math.pi), rng.uniform(0.5 * math.pi, 1.5 * math.pi)
    on_circle = np.abs(np.hypot(dy, dx) - r) <= width / 2
    in_span = np.mod(np.arctan2(dy, dx) - start, 2 * math.pi) <= span
    result: BoolArray = on_circle & in_span
    return result


def _polygon(rng: np.random.Generator, grid: Grid, cy: float, cx: float, r: float) -> BoolArray:
    sides = int(rng.integers(3, 7))
    jitter = rng.uniform(-0.3, 0.3, sides) * math.pi / sides
    angles = rng.uniform(0, 2 * math.pi) + 2 * math.pi * np.arange(sides) / sides + jitter
    # Points on an ellipse in angular order form a convex polygon: same side of every edge.
    aspect, tilt = rng.uniform(0.55, 1.0), rng.uniform(0, math.pi)
    px, py = r * np.cos(angles), r * aspect * np.sin(angles)
    vx = cx + px * math.cos(tilt) - py * math.sin(tilt)
    vy = cy + px * math.sin(tilt) + py * math.cos(tilt)
    inside = np.ones(grid.yy.shape, dtype=bool)
    for i in range(sides):
        j = (i + 1) % sides
        side = (grid.xx - vx[i]) * (vy[j] - vy[i]) - (grid.yy - vy[i]) * (vx[j] - vx[i])
        inside &= side <= 0
    return inside


def _cross(rng: np.random.Generator, grid: Grid, cy: float, cx: float, r: float) -> BoolArray:
    u, v = grid.local(cy, cx, rng.uniform(0, math.pi / 2))
    long_arm, short_arm = r, r * rng.uniform(0.6, 1.0)
    half_width = max(1.0, r * rng.uniform(0.08, 0.22))
    horizontal = (np.abs(u) <= long_arm) & (np.abs(v) <= half_width)
    vertical = (np.abs(u) <= half_width) & (np.abs(v) <= short_arm)
    result: BoolArray = horizontal | vertical
    return result


def _frame(rng: np.random.Generator, grid: Grid, cy: float, cx: float, r: float) -> BoolArray:
    u, v = grid.local(cy, cx, rng.uniform(0, math.pi / 2))
    a, b = r, r * rng.uniform(0.5, 1.0)
    border = min(max(2.0, b * rng.uniform(0.15, 0.35)), max(b - 1.5, 1.0))
    outer = (np.abs(u) <= a) & (np.abs(v) <= b)
    inner = (np.abs(u) < a - border) & (np.abs(v) < b - border)
    result: BoolArray = outer & ~inner
    return result


def _l_shape(rng: np.random.Generator, grid: Grid, cy: float, cx: float, r: float) -> BoolArray:
    u, v = grid.local(cy, cx, rng.uniform(0, 2 * math.pi))
    width = rng.uniform(2.0, 4.5)
    long_arm, short_arm = r * rng.uniform(1.2, 2.0), r * rng.uniform(0.8, 1.6)
    # Shift so the L's bounding box, not its corner, sits on the centre.
    u, v = u + long_arm / 2, v + short_arm / 2
    first = (u >= 0) & (u <= long_arm) & (v >= 0) & (v <= width)
    second = (u >= 0) & (u <= width) & (v >= 0) & (v <= short_arm)
    result: BoolArray = first | second
    return result


ShapeFn = Callable[[np.random.Generator, Grid, float, float, float], BoolArray]
SHAPES: dict[str, ShapeFn] = {
    "ellipse": _ellipse,
    "ring": _ring,
    "blob": _blob,
    "arc": _arc,
    "polygon": _polygon,
    "cross": _cross,
    "frame": _frame,
    "l_shape": _l_shape,
}
