"""Seeded synthetic scenes with exact instance masks (issue 5, item 1).

They feed the seed model, the tests, the demo project and the engine benchmark, so they must be
reproducible byte for byte from ``(seed, domain, size)`` and hard enough to be worth segmenting:
textured backgrounds, many overlapping shaded objects, shapes with holes and with thin parts.

Two domains differ in shape families, textures and palette so that adaptation from one to the
other can be measured: ``A`` is warm ellipses, rings, blobs and arcs on smooth backgrounds; ``B``
is cool polygons, crosses, frames and L-shapes on striped or checkered backgrounds.

Objects are painted in order, later ones occluding earlier ones; a scene's masks are the
*visible* parts, and objects whose visible area falls under :func:`min_visible_area` are removed
before painting, so every pixel of a mask shows its object and nothing else does.
"""

import colorsys
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.loop.scene_shapes import SHAPES, BoolArray, FloatArray, Grid

DOMAINS: tuple[str, ...] = ("A", "B")
FAMILIES: dict[str, tuple[str, ...]] = {
    "A": ("ellipse", "ring", "blob", "arc"),
    "B": ("polygon", "cross", "frame", "l_shape"),
}
HOLED_FAMILIES: frozenset[str] = frozenset({"ring", "frame"})
THIN_FAMILIES: frozenset[str] = frozenset({"arc", "l_shape"})
DEFAULT_SIZE: tuple[int, int] = (480, 640)
MIN_SIDE = 16
# Per-pixel grain amplitude; bounded so a test can check each pixel against its layer exactly.
GRAIN = 3

# Mixed into the seed so domain A and B scenes with the same seed are unrelated.
_DOMAIN_SALT = {"A": 0xA11CE, "B": 0xB0B}
_OBJECTS_PER_SCENE = (6, 20)
# Extra batches of objects when none survive occlusion (only plausible on tiny canvases).
_MAX_BATCHES = 8


@dataclass(frozen=True, eq=False)
class Scene:
    """One generated image and its visible instance masks, in paint order (bottom first)."""

    seed: int
    domain: str
    image: NDArray[np.uint8]
    masks: list[BoolArray]
    families: list[str]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def label_map(self) -> NDArray[np.int32]:
        """0 for background, ``i + 1`` where ``masks[i]`` is set (masks are disjoint)."""
        labels = np.zeros(self.size, dtype=np.int32)
        for index, mask in enumerate(self.masks):
            labels[mask] = index + 1
        return labels


@dataclass(frozen=True)
class Paint:
    """How one object is coloured: base colour times shading plus a pattern, by coordinates."""

    rgb: tuple[float, float, float]
    centre: tuple[float, float]
    radius: float
    light: float
    gradient: float
    dome: float
    pattern: str
    period: float
    angle: float
    amplitude: float

    def colours(self, ys: NDArray[np.floating[Any]], xs: NDArray[np.floating[Any]]) -> FloatArray:
        """Float RGB, shape (N, 3), nominally 0 to 255, at pixel centres ``(ys, xs)``."""
        dy = ys - self.centre[0]
        dx = xs - self.centre[1]
        along_light = (dx * math.cos(self.light) + dy * math.sin(self.light)) / self.radius
        dist2 = (dx * dx + dy * dy) / (self.radius * self.radius)
        shade = 1.0 + self.gradient * np.clip(along_light, -1.5, 1.5)
        shade -= self.dome * np.minimum(dist2, 2.0)
        u = dx * math.cos(self.angle) + dy * math.sin(self.angle)
        v = -dx * math.sin(self.angle) + dy * math.cos(self.angle)
        if self.pattern == "waves":
            wobble = 0.8 * np.sin(2 * math.pi * v / (3 * self.period))
            phase = 2 * math.pi * u / self.period + wobble
            shade += self.amplitude * np.sin(phase)
        elif self.pattern == "stripes":
            shade += self.amplitude * np.sin(2 * math.pi * u / self.period)
        elif self.pattern == "checker":
            cells = np.floor(u / self.period) + np.floor(v / self.period)
            shade += self.amplitude * np.where(cells % 2 == 0, 1.0, -1.0)
        return shade[:, None] * np.asarray(self.rgb)[None, :]


@dataclass(frozen=True, eq=False)
class SceneObject:
    """A planned object: its full (unoccluded) shape and its paint."""

    family: str
    shape: BoolArray
    paint: Paint


@dataclass(frozen=True, eq=False)
class ScenePlan:
    """Everything a scene is rendered from; ``objects`` are the survivors, in paint order."""

    seed: int
    domain: str
    background: FloatArray
    objects: list[SceneObject]
    grain: NDArray[np.int16]


def min_visible_area(size: tuple[int, int]) -> int:
    """Smallest visible area (pixels) an object keeps to stay in a scene of this size."""
    return max(12, round(0.0006 * size[0] * size[1]))


def _check_args(seed: int, domain: str, size: tuple[int, int]) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if len(size) != 2 or any(not isinstance(n, int) or n < MIN_SIDE for n in size):
        raise ValueError(f"size must be (height, width) ints of at least {MIN_SIDE}, got {size!r}")


def _hsv(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return r * 255.0, g * 255.0, b * 255.0


def _smooth_noise(rng: np.random.Generator, grid: Grid, cells: int) -> FloatArray:
    """Low-frequency noise: a coarse random lattice, smoothstep-interpolated to full size."""
    lattice = rng.standard_normal((cells + 1, cells + 1))
    fy = grid.yy / grid.height * cells
    fx = grid.xx / grid.width * cells
    y0 = np.minimum(fy.astype(np.int64), cells - 1)
    x0 = np.minimum(fx.astype(np.int64), cells - 1)
    ty = fy - y0
    tx = fx - x0
    ty = ty * ty * (3 - 2 * ty)
    tx = tx * tx * (3 - 2 * tx)
    top = lattice[y0, x0] * (1 - tx) + lattice[y0, x0 + 1] * tx
    bottom = lattice[y0 + 1, x0] * (1 - tx) + lattice[y0 + 1, x0 + 1] * tx
    result: FloatArray = top * (1 - ty) + bottom * ty
    return result


def _gradient(rng: np.random.Generator, grid: Grid) -> FloatArray:
    """A linear ramp from 0 to 1 across the canvas in a random direction."""
    u, _ = grid.local(grid.height / 2, grid.width / 2, rng.uniform(0, 2 * math.pi))
    span = float(u.max() - u.min()) or 1.0
    ramp: FloatArray = (u - u.min()) / span
    return ramp


def _background(rng: np.random.Generator, grid: Grid, domain: str) -> FloatArray:
    if domain == "A":
        # Warm sand tones, smooth: a gradient and two octaves of soft noise.
        light = _hsv(rng.uniform(0.07, 0.13), rng.uniform(0.12, 0.35), rng.uniform(0.72, 0.95))
        dark = _hsv(rng.uniform(0.04, 0.12), rng.uniform(0.15, 0.4), rng.uniform(0.5, 0.72))
        texture = 0.07 * _smooth_noise(rng, grid, int(rng.integers(2, 6)))
        texture += 0.03 * _smooth_noise(rng, grid, int(rng.integers(8, 15)))
    else:
        # Cool blue-greys with a regular high-contrast pattern: stripes or a checkerboard.
        light = _hsv(rng.uniform(0.55, 0.68), rng.uniform(0.1, 0.3), rng.uniform(0.55, 0.85))
        dark = _hsv(rng.uniform(0.55, 0.68), rng.uniform(0.15, 0.35), rng.uniform(0.3, 0.55))
        period = max(4.0, rng.uniform(0.025, 0.08) * grid.side)
        amplitude = rng.uniform(0.08, 0.18)
        u, v = grid.local(0.0, 0.0, rng.uniform(0, math.pi))
        if rng.random() < 0.5:
            texture = amplitude * np.sin(2 * math.pi * u / period)
        else:
            cells = np.floor(u / period) + np.floor(v / period)
            texture = amplitude * np.where(cells % 2 == 0, 1.0, -1.0)
        texture += 0.03 * _smooth_noise(rng, grid, int(rng.integers(3, 8)))
    ramp = _gradient(rng, grid)[..., None]
    base = np.asarray(light) * (1 - ramp) + np.asarray(dark) * ramp
    result: FloatArray = base * (1.0 + texture)[..., None]
    return result


def _paint(rng: np.random.Generator, domain: str, cy: float, cx: float, r: float) -> Paint:
    if domain == "A":
        # Reds, oranges and yellows, lit like rounded objects.
        rgb = _hsv(rng.uniform(-0.05, 0.13), rng.uniform(0.55, 0.95), rng.uniform(0.5, 0.95))
        gradient, dome = rng.uniform(0.1, 0.3), rng.uniform(0.08, 0.25)
        pattern = "waves" if rng.random() < 0.5 else "none"
        period, amplitude = rng.uniform(8.0, 24.0), rng.uniform(0.04, 0.1)
    else:
        # Cyans, blues and violets, flat-lit but with a fine print.
        rgb = _hsv(rng.uniform(0.45, 0.75), rng.uniform(0.45, 0.9), rng.uniform(0.45, 1.0))
        gradient, dome = rng.uniform(0.05, 0.2), 0.0
        pattern = "stripes" if rng.random() < 0.5 else "checker"
        period, amplitude = rng.uniform(3.0, 8.0), rng.uniform(0.08, 0.18)
    return Paint(
        rgb=rgb,
        centre=(cy, cx),
        radius=max(r, 1.0),
        light=rng.uniform(0, 2 * math.pi),
        gradient=gradient,
        dome=dome,
        pattern=pattern,
        period=period,
        angle=rng.uniform(0, math.pi),
        amplitude=amplitude,
    )


def _plan_object(rng: np.random.Generator, grid: Grid, domain: str) -> SceneObject:
    families = FAMILIES[domain]
    family = families[int(rng.integers(len(families)))]
    cy = rng.uniform(0.05, 0.95) * grid.height
    cx = rng.uniform(0.05, 0.95) * grid.width
    r = rng.uniform(0.05, 0.17) * grid.side
    shape = SHAPES[family](rng, grid, cy, cx, r)
    return SceneObject(family=family, shape=shape, paint=_paint(rng, domain, cy, cx, r))


def _visible(shapes: list[BoolArray], size: tuple[int, int]) -> list[BoolArray]:
    """Visible part of each shape when painted in order (later ones on top)."""
    top = np.full(size, -1, dtype=np.int32)
    for index, shape in enumerate(shapes):
        top[shape] = index
    return [top == index for index in range(len(shapes))]


def plan_scene(seed: int, domain: str, size: tuple[int, int] = DEFAULT_SIZE) -> ScenePlan:
    """The layers of a scene before compositing; :func:`render` turns it into a :class:`Scene`."""
    _check_args(seed, domain, size)
    rng = np.random.default_rng([seed, _DOMAIN_SALT[domain]])
    yy, xx = np.indices(size, dtype=np.float64) + 0.5
    grid = Grid(yy=yy, xx=xx)
    background = _background(rng, grid, domain)
    floor = min_visible_area(size)
    objects: list[SceneObject] = []
    batch = int(rng.integers(_OBJECTS_PER_SCENE[0], _OBJECTS_PER_SCENE[1] + 1))
    for _ in range(_MAX_BATCHES):
        objects += [_plan_object(rng, grid, domain) for _ in range(batch)]
        visible = _visible([o.shape for o in objects], size)
        # One pass suffices: removing an object only uncovers pixels of the others.
        objects = [o for o, m in zip(objects, visible, strict=True) if int(m.sum()) >= floor]
        if objects:
            break
        batch = _OBJECTS_PER_SCENE[0]
    grain = rng.integers(-GRAIN, GRAIN + 1, size=(*size, 3)).astype(np.int16)
    return ScenePlan(seed=seed, domain=domain, background=background, objects=objects, grain=grain)


def render(plan: ScenePlan) -> Scene:
    """Composite a plan: background, then objects in order, then grain; masks are what shows."""
    colour = plan.background.copy()
    size = (int(colour.shape[0]), int(colour.shape[1]))
    masks = _visible([o.shape for o in plan.objects], size)
    for obj, mask in zip(plan.objects, masks, strict=True):
        ys, xs = np.nonzero(mask)
        colour[ys, xs] = obj.paint.colours(ys + 0.5, xs + 0.5)
        # Read-only so a frozen Scene cannot be changed behind a consumer's back.
        mask.setflags(write=False)
    image = np.clip(np.rint(colour) + plan.grain, 0, 255).astype(np.uint8)
    image.setflags(write=False)
    return Scene(
        seed=plan.seed,
        domain=plan.domain,
        image=image,
        masks=masks,
        families=[o.family for o in plan.objects],
    )


def generate_scene(seed: int, domain: str, size: tuple[int, int] = DEFAULT_SIZE) -> Scene:
    """The scene for ``(seed, domain, size)``: byte-identical on every call and in every process."""
    return render(plan_scene(seed, domain, size))


def scene_dataset(
    count: int, domain: str, first_seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE
) -> Iterator[Scene]:
    """``count`` scenes with consecutive seeds from ``first_seed``, generated lazily."""
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    # Checked here, not on first next(), so a bad argument fails where it is passed.
    _check_args(first_seed, domain, size)
    return (generate_scene(first_seed + offset, domain, size) for offset in range(count))
