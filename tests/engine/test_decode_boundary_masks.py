"""The server decoder's boundary-only upsampling gives `predict`'s masks bit for bit.

engine.sam.exact_bilinear (torch's bilinear arithmetic at chosen pixels), engine.sam.
boundary_masks (tiles decided from the low-res signs, boundary tiles computed, close calls
settled exactly) and engine.sam.decode_masks (the predictor-level entry with its fallback).
"""

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from engine.sam import boundary_masks, exact_bilinear
from engine.sam.amg.rle import mask_to_coco_rle
from engine.sam.boundary_masks import BoundaryMasks
from engine.sam.checkpoint import load_sam
from engine.sam.decode_masks import predict_masks
from engine.sam.exact_bilinear import (
    axis_weights,
    fma32,
    kernel_kind,
    resize_full,
)
from engine.sam.predictor import SamPredictor
from engine.sam.transforms import ResizeLongestSide
from tests.engine.conftest import GOLDEN_CHECKPOINT

# (H, W): the brief's extremes (1 x 1, 10000 x 300, 4000 x 6000), wide, tall, odd, small
SIZES = [(1, 1), (10000, 300), (300, 10000), (4000, 6000), (1000, 1500), (999, 1001), (37, 61)]


@pytest.fixture
def threads():
    """Run a test at a chosen torch thread count, restoring the old one."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def exact_float32(value: Fraction) -> np.float32:
    """The float32 nearest to a rational (ties to even), by exact comparison."""
    guess = np.float32(float(value))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess]
    candidates.append(np.nextafter(guess, np.float32(np.inf)))

    def key(candidate: np.float32) -> tuple[Fraction, int]:
        mantissa = int(np.array(candidate, dtype=np.float32).view(np.int32)) & 1
        return abs(Fraction(float(candidate)) - value), mantissa

    return min(candidates, key=key)


def test_fma32_rounds_once_like_a_fused_multiply_add():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(3000) * 8).astype(np.float32)
    b = rng.random(3000).astype(np.float32)
    c = (rng.standard_normal(3000) * 8).astype(np.float32)
    # Sums that land exactly halfway between two float32 values after rounding to float64
    # (where rounding twice would go wrong): a * b = 1 + 2**-24 + 2**-60-ish, c = -1 etc.
    a[:4] = np.float32(1 + 2**-23)
    b[:4] = np.float32(1 + 2**-23)
    c[:4] = np.array([-1.0, -(1 + 2**-22), 2**-30, -(2**-30)], dtype=np.float32)
    got = fma32(a, b, c)
    for k in range(len(a)):
        exact = Fraction(float(a[k])) * Fraction(float(b[k])) + Fraction(float(c[k]))
        assert got[k] == exact_float32(exact), (a[k], b[k], c[k])


@pytest.mark.parametrize(("size_in", "size_out"), [(256, 1024), (683, 1000), (30, 300), (9, 4)])
def test_axis_weights_are_torchs(size_in, size_out):
    axis = axis_weights(size_in, size_out)
    eye = torch.eye(size_in)[None, None]  # resize the columns: each row gives one weight set
    resized = nnf.interpolate(eye, (size_in, size_out), mode="bilinear", align_corners=False)
    weights = resized[0, 0].numpy()  # size_in x size_out
    outputs = np.arange(size_out)
    distinct = axis.i0 != axis.i1
    assert np.array_equal(weights[axis.i0[distinct], outputs[distinct]], axis.w0[distinct])
    assert np.array_equal(weights[axis.i1[distinct], outputs[distinct]], axis.w1[distinct])
    assert np.all(axis.w0 > 0)


@pytest.mark.parametrize("thread_count", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("size_in", "size_out"),
    [((256, 256), (1024, 1024)), ((683, 1024), (1000, 1500)), ((31, 1024), (300, 10000)),
     ((1024, 1024), (1, 1)), ((50, 70), (40, 80))],
)  # fmt: skip
def test_the_emulation_equals_torchs_interpolate_bit_for_bit(
    threads, thread_count, channels, size_in, size_out
):
    threads(thread_count)
    src = torch.randn((1, channels, *size_in), generator=torch.Generator().manual_seed(3)) * 8
    expected = nnf.interpolate(src, size_out, mode="bilinear", align_corners=False)[0].numpy()
    got = resize_full(src[0].numpy(), size_out, kernel_kind(channels, size_out))
    assert np.array_equal(got, expected)
    assert exact_bilinear.emulation_matches_torch(channels)


def smooth_logits(seed: int, channels: int = 3, cells: int = 6) -> torch.Tensor:
    """Low-frequency logits: masks with long boundaries and large constant parts."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn((1, channels, cells, cells), generator=generator) * 10
    return nnf.interpolate(coarse, (256, 256), mode="bicubic", align_corners=False)[0]


def reference(low: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """`predict`'s masks: postprocess_masks as Sam does it, thresholded at 0."""
    input_size = ResizeLongestSide.get_preprocess_shape(size[0], size[1], 1024)
    full = nnf.interpolate(low[None], (1024, 1024), mode="bilinear", align_corners=False)
    full = full[..., : input_size[0], : input_size[1]]
    return (nnf.interpolate(full, size, mode="bilinear", align_corners=False)[0] > 0).numpy()


def boundary_for(size: tuple[int, int]) -> BoundaryMasks:
    input_size = ResizeLongestSide.get_preprocess_shape(size[0], size[1], 1024)
    return BoundaryMasks(
        low_size=(256, 256), image_size=1024, input_size=input_size, original_size=size
    )


@pytest.mark.parametrize("size", SIZES)
def test_boundary_masks_and_their_rle_equal_predicts(size, monkeypatch):
    monkeypatch.setattr(boundary_masks, "MAX_BOUNDARY_FRACTION", 1.0)  # small sizes too
    monkeypatch.setattr(boundary_masks, "MAX_SIGN_CHANGE_FRACTION", 1.0)
    channels = 1 if size[0] * size[1] > 5_000_000 else 3
    low = smooth_logits(size[0] + size[1], channels)
    expected = reference(low, size)
    masks = boundary_for(size)
    plan = masks.plan(low)
    assert plan is not None
    if plan.full.size > 100:
        assert len(plan.boundary) < plan.full.size / 2  # the constant tiles were decided
    assert np.array_equal(masks.masks(plan), expected)
    rles = masks.coco_rles(plan)
    assert rles == [mask_to_coco_rle(mask) for mask in expected]  # byte for byte


@pytest.mark.parametrize("thread_count", [1, 2])
def test_logits_at_zero_are_settled_with_torchs_arithmetic(threads, thread_count, monkeypatch):
    threads(thread_count)
    size = (999, 1001)
    # Exact zeros and values of +-1e-7 next to each other: many outputs within the bound.
    low = smooth_logits(5)
    low = torch.where(low.abs() < 3, torch.sign(low) * 1e-7 * (low.abs() > 1), low)
    settled: list[int] = []
    original = BoundaryMasks.exact_values

    def counting(self, low_np, channel, y, x):
        settled.append(len(channel))
        return original(self, low_np, channel, y, x)

    monkeypatch.setattr(BoundaryMasks, "exact_values", counting)
    masks = boundary_for(size)
    plan = masks.plan(low)
    assert plan is not None
    assert sum(settled) > 1000
    assert np.array_equal(masks.masks(plan), reference(low, size))


def test_exact_values_are_postprocess_logits_bit_for_bit():
    size = (1000, 1500)
    low = smooth_logits(9)
    input_size = ResizeLongestSide.get_preprocess_shape(size[0], size[1], 1024)
    full = nnf.interpolate(low[None], (1024, 1024), mode="bilinear", align_corners=False)
    full = full[..., : input_size[0], : input_size[1]]
    logits = nnf.interpolate(full, size, mode="bilinear", align_corners=False)[0].numpy()
    rng = np.random.default_rng(1)
    channel = rng.integers(0, 3, 5000)
    y, x = rng.integers(0, size[0], 5000), rng.integers(0, size[1], 5000)
    got = boundary_for(size).exact_values(low.numpy(), channel, y, x)
    assert np.array_equal(got, logits[channel, y, x])


def test_noise_logits_and_an_unmatched_torch_are_refused(monkeypatch):
    masks = boundary_for((1000, 1500))
    noise = torch.randn((3, 256, 256), generator=torch.Generator().manual_seed(2))
    assert masks.plan(noise) is None  # about every other low-res neighbour changes sign
    monkeypatch.setattr(boundary_masks, "MAX_SIGN_CHANGE_FRACTION", 1.0)
    assert masks.plan(noise) is None  # and nearly every tile is a boundary tile
    monkeypatch.setattr(boundary_masks, "emulation_matches_torch", lambda channels: False)
    assert masks.plan(smooth_logits(1)) is None


# --- the predictor-level entry -------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_predictor() -> SamPredictor:
    """The trained seed model (real, smooth masks) on one of its synthetic scenes."""
    from pathlib import Path

    from training.loop.scenes import generate_scene

    checkpoint = Path(__file__).parents[2] / "training" / "seed" / "seed_vit_tiny_domain_a.pth"
    predictor = SamPredictor(load_sam(checkpoint).eval())
    predictor.set_image(generate_scene(3, "A", (600, 900)).image)
    return predictor


@pytest.mark.parametrize("thread_count", [1, 2])
def test_predict_masks_equals_predict_on_real_masks(seed_predictor, threads, thread_count):
    threads(thread_count)
    rng = np.random.default_rng(4)
    previous = None
    taken = 0
    for clicks in (1, 2, 3, 4):
        points = rng.uniform((0, 0), (900, 600), size=(clicks, 2))
        labels = np.array([1] + [int(v) for v in rng.integers(0, 2, clicks - 1)])
        box = np.array([100, 80, 700, 500]) if clicks == 4 else None
        masks, scores, low_res = seed_predictor.predict(
            points, labels, box, previous, multimask_output=clicks == 1
        )
        decoded = predict_masks(
            seed_predictor,
            point_coords=points,
            point_labels=labels,
            box=box,
            mask_input=previous,
            multimask_output=clicks == 1,
        )
        taken += decoded.plan is not None
        assert np.array_equal(decoded.masks(), masks)
        assert decoded.coco_rles() == [mask_to_coco_rle(mask) for mask in masks]
        assert np.array_equal(decoded.scores, scores)
        assert np.array_equal(decoded.low_res, low_res)
        previous = low_res[int(np.argmax(scores))][None]
    assert taken >= 3  # real masks go the boundary way


def test_predict_masks_falls_back_to_the_full_upsampling(monkeypatch):
    predictor = SamPredictor(load_sam(GOLDEN_CHECKPOINT).eval())
    embedding = torch.randn((1, predictor.model.prompt_encoder.embed_dim, 64, 64))
    predictor.set_embedding(embedding * 4, (300, 500))
    monkeypatch.setattr(boundary_masks, "MAX_BOUNDARY_FRACTION", -1.0)  # refuse every plan
    points, labels = np.array([[100.0, 100.0]]), np.array([1])
    masks, scores, _ = predictor.predict(points, labels, multimask_output=True)
    decoded = predict_masks(predictor, point_coords=points, point_labels=labels)
    assert decoded.plan is None
    assert np.array_equal(decoded.masks(), masks)
    assert decoded.coco_rles() == [mask_to_coco_rle(mask) for mask in masks]
    assert np.array_equal(decoded.scores, scores)
