"""Torch's CPU float32 bilinear resize (``align_corners=False``), reproduced bit for bit at
chosen pixels.

`Sam.postprocess_masks` upsamples low-res logits with ``nnf.interpolate``. A caller that
computes only some output pixels (engine.sam.boundary_masks: the pixels near a mask's boundary)
and must still threshold them exactly as `predict` does needs torch's own float32 arithmetic
there, operation for operation. On the CPU (ATen's ``UpSampleKernel.cpp``, as compiled in the
wheels, with fused multiply-adds) that is, per axis (``scale = float(in) / out``)::

    src = max(fma(scale, i + 0.5, -0.5), 0);  i0 = min(floor(src), in - 1)
    w1 = src - i0;  w0 = 1 - w1;  i1 = i0 + (i0 < in - 1)

and per output pixel one of two kernels:

* ``separable`` (the generic kernel): ``t0 = fma(x00, wx0, x01 * wx1)``, ``t1`` likewise on row
  ``i1``, ``out = fma(t0, wy0, t1 * wy1)``;
* ``four`` (the channels-last kernel, which torch also picks for outputs of at most 128 rows +
  columns and, with one intra-op thread, for three channels): the four weights ``wy * wx``
  rounded to float32 and ``out = fma(x11, w11, fma(x10, w10, fma(x00, w00, x01 * w01)))``.

numpy has no fused multiply-add, so `fma32` computes one exactly: the float64 product of two
float32 values is exact, the float64 sum is rounded to odd (its exact error found by TwoSum),
and rounding that to float32 is then the correctly rounded fused result.

Which kernel torch takes and how it rounds are properties of the installed torch and CPU, so
`emulation_matches_torch` compares this emulation with ``nnf.interpolate`` on random inputs
once per (channels, intra-op thread count) per process; callers use the emulation only when it
matches and fall back to torch otherwise.
"""

import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf

SEPARABLE = "separable"
FOUR = "four"


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` of float32 arrays with one rounding (IEEE fused multiply-add), float32."""
    a64 = np.asarray(a, dtype=np.float32).astype(np.float64)
    b64 = np.asarray(b, dtype=np.float32).astype(np.float64)
    c64 = np.asarray(c, dtype=np.float32).astype(np.float64)
    product = a64 * b64  # exact: 24 + 24 significant bits fit in 53
    total = product + c64
    # TwoSum: the exact rounding error of `total` (Knuth).
    virtual = total - product
    error = (product - (total - virtual)) + (c64 - virtual)
    # Round to odd: an inexact sum whose last bit is even moves one float64 step towards the
    # exact value, so that the float32 rounding below cannot round twice (53 >= 2 * 24 + 2).
    bits = total.view(np.int64)
    inexact_even = (error != 0) & ((bits & 1) == 0)
    away = np.signbit(error) == np.signbit(total)  # the exact value is further from zero
    bits = np.where(inexact_even, bits + np.where(away, 1, -1), bits)
    return bits.view(np.float64).astype(np.float32)


@dataclass(frozen=True)
class AxisWeights:
    """One axis of a resize ``size_in -> size_out``: output i reads i0[i] and i1[i]."""

    i0: np.ndarray  # size_out int64
    i1: np.ndarray  # size_out int64
    w0: np.ndarray  # size_out float32
    w1: np.ndarray  # size_out float32


def axis_weights(size_in: int, size_out: int) -> AxisWeights:
    """torch's source indices and weights (see the module docstring) for one axis."""
    if size_in < 1 or size_out < 1:
        raise ValueError(f"sizes must be positive, got {size_in} -> {size_out}")
    scale = np.float32(size_in) / np.float32(size_out)
    index = np.arange(size_out, dtype=np.float32) + np.float32(0.5)
    src = fma32(np.full(size_out, scale, np.float32), index, np.full(size_out, -0.5, np.float32))
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    i1 = i0 + (i0 < size_in - 1)
    return AxisWeights(i0=i0, i1=i1, w0=w0, w1=w1.astype(np.float32))


def kernel_kind(channels: int, size_out: tuple[int, int], threads: int | None = None) -> str:
    """The kernel torch's CPU ``interpolate`` uses for a contiguous 1 x channels float32
    input (channels <= 3) resized to ``size_out``, with ``threads`` intra-op threads."""
    threads = torch.get_num_threads() if threads is None else threads
    if size_out[0] + size_out[1] <= 128 or (threads == 1 and channels == 3):
        return FOUR
    return SEPARABLE


def resize_pixels(
    src: np.ndarray,
    rows: AxisWeights,
    cols: AxisWeights,
    channel: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    kind: str,
) -> np.ndarray:
    """Output pixels (channel[k], y[k], x[k]) of resizing ``src`` (C x h x w float32) with the
    axes ``rows`` / ``cols``: float32 values, bit for bit torch's (see the module docstring)."""
    y0, y1, x0, x1 = rows.i0[y], rows.i1[y], cols.i0[x], cols.i1[x]
    return combine(
        (src[channel, y0, x0], src[channel, y0, x1], src[channel, y1, x0], src[channel, y1, x1]),
        (rows.w0[y], rows.w1[y]),
        (cols.w0[x], cols.w1[x]),
        kind,
    )


def combine(
    corners: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    row_weights: tuple[np.ndarray, np.ndarray],
    col_weights: tuple[np.ndarray, np.ndarray],
    kind: str,
) -> np.ndarray:
    """One output value per element from its corners (x00, x01, x10, x11: rows i0 / i1 by
    columns i0 / i1) and weights, in the arithmetic of torch's kernel ``kind``."""
    x00, x01, x10, x11 = corners
    wy0, wy1 = row_weights
    wx0, wx1 = col_weights
    if kind == SEPARABLE:
        top = fma32(x00, wx0, x01 * wx1)
        bottom = fma32(x10, wx0, x11 * wx1)
        return fma32(top, wy0, bottom * wy1)
    if kind == FOUR:
        w00, w01, w10, w11 = wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1  # float32 products
        total = fma32(x00, w00, x01 * w01)
        total = fma32(x10, w10, total)
        return fma32(x11, w11, total)
    raise ValueError(f"unknown kernel kind {kind!r}; expected {SEPARABLE!r} or {FOUR!r}")


def resize_full(src: np.ndarray, size_out: tuple[int, int], kind: str) -> np.ndarray:
    """C x h x w float32 -> C x H x W float32 with `resize_pixels` at every pixel."""
    channels, height, width = src.shape
    rows, cols = axis_weights(height, size_out[0]), axis_weights(width, size_out[1])
    c, y, x = (v.ravel() for v in np.indices((channels, *size_out)))
    return resize_pixels(src, rows, cols, c, y, x, kind).reshape(channels, *size_out)


_checked: dict[tuple[int, int], bool] = {}
_checked_lock = threading.Lock()
# Output sizes that take each kernel: at most 128 rows + columns (always "four"), more
# (separable, or "four" for three channels on one thread), down- and upsampling, odd scales.
_PROBES = (((13, 17), (40, 70)), ((13, 17), (53, 90)), ((37, 29), (20, 131)), ((4, 4), (1, 1)))


def emulation_matches_torch(channels: int) -> bool:
    """True when `resize_pixels` (with `kernel_kind`) equals ``nnf.interpolate`` bit for bit on
    random inputs for ``channels`` at the current intra-op thread count; checked once each."""
    key = (channels, torch.get_num_threads())
    with _checked_lock:
        known = _checked.get(key)
    if known is not None:
        return known
    generator = torch.Generator().manual_seed(channels)
    matches = True
    for size_in, size_out in _PROBES:
        src = torch.randn((1, channels, *size_in), generator=generator) * 8.0
        expected = nnf.interpolate(src, size_out, mode="bilinear", align_corners=False)
        got = resize_full(src[0].numpy(), size_out, kernel_kind(channels, size_out))
        matches = matches and bool(np.array_equal(expected[0].numpy(), got))
    with _checked_lock:
        _checked[key] = matches
    return matches
