"""Simulated prompts: uniform draws from the right regions, noisy boxes, seeded determinism."""

import pytest
import torch

from training.loop.prompts_sim import (
    NO_POINT,
    error_points,
    mask_boxes,
    noisy_boxes,
    positive_points,
    sample_uniform,
    to_input_frame,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def back_to_pixels(coords: torch.Tensor, scale: float) -> torch.Tensor:
    """Input-frame xy -> mask (row, col) long, inverting `to_input_frame`."""
    return torch.round((coords + 0.5) / scale - 0.5).long().flip(-1)


def test_to_input_frame_maps_pixel_centres() -> None:
    rows_cols = torch.tensor([[0, 0], [3, 7]])
    assert to_input_frame(rows_cols, (64, 64), 64).tolist() == [[0.0, 0.0], [7.0, 3.0]]
    # 4x coarser masks: pixel (3, 7) spans x 28..32, centre 30 -> 29.5 before the encoder's +0.5.
    assert to_input_frame(rows_cols, (16, 16), 64).tolist() == [[1.5, 1.5], [29.5, 13.5]]


def test_sample_uniform_stays_in_region_and_is_uniform() -> None:
    region = torch.zeros((4000, 8, 8), dtype=torch.bool)
    region[:, 2, 5] = True
    region[:, 6, 1] = True
    region[-1] = False
    rows_cols, found = sample_uniform(region, gen(0))
    assert found[:-1].all()
    assert not found[-1]
    hits = region[torch.arange(3999), rows_cols[:-1, 0], rows_cols[:-1, 1]]
    assert hits.all()
    first = int((rows_cols[:-1, 0] == 2).sum())
    assert 1800 < first < 2200  # two pixels, equally likely (deterministic for the seed)


def test_positive_points_are_foreground() -> None:
    gt = torch.zeros((50, 32, 32), dtype=torch.bool)
    gt[:, 4:9, 20:30] = True
    gt[-1] = False
    coords, labels = positive_points(gt, 128, gen(1))
    assert labels[:-1].eq(1).all()
    assert labels[-1] == NO_POINT
    pixels = back_to_pixels(coords[:-1], 4.0)
    assert gt[torch.arange(49), pixels[:, 0], pixels[:, 1]].all()


def test_error_points_label_false_negatives_positive_false_positives_negative() -> None:
    gt = torch.zeros((300, 16, 16), dtype=torch.bool)
    gt[:, 2:8, 2:8] = True
    predicted = torch.zeros_like(gt)
    predicted[:, 4:12, 4:12] = True  # misses part of gt, spills outside it
    predicted[-1] = gt[-1]  # an exact prediction has no error to click on
    coords, labels = error_points(predicted, gt, 16, gen(2))
    pixels = back_to_pixels(coords, 1.0)
    rows = torch.arange(300)
    at_gt = gt[rows, pixels[:, 0], pixels[:, 1]]
    at_pred = predicted[rows, pixels[:, 0], pixels[:, 1]]
    assert labels[-1] == NO_POINT
    assert (at_gt != at_pred)[:-1].all()  # every point is in the error region
    assert torch.equal(labels[:-1], at_gt[:-1].long())  # FN -> 1, FP -> 0
    assert 0 < int(labels[:-1].sum()) < 299  # both kinds occur


def test_mask_boxes_are_tight_in_the_input_frame() -> None:
    gt = torch.zeros((2, 32, 32), dtype=torch.bool)
    gt[0, 3:10, 5:21] = True
    boxes = mask_boxes(gt, 32)
    assert boxes[0].tolist() == [5.0, 3.0, 20.0, 9.0]
    assert boxes[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert mask_boxes(gt[:1], 64)[0].tolist() == [10.5, 6.5, 40.5, 18.5]


def test_noisy_boxes_noise_scale_cap_and_clipping() -> None:
    count = 3000
    gt = torch.zeros((count, 256, 256), dtype=torch.bool)
    gt[:1000, 100:151, 100:201] = True  # 100 wide, 50 high: std 10 px in x, 5 px in y
    gt[1000:2000, 10:250, 5:250] = True  # large: std > 20, noise capped at 20 px
    gt[2000:, 0:40, 0:40] = True  # touches the corner: clipped to the frame
    tight = mask_boxes(gt, 256)
    boxes = noisy_boxes(gt, 256, gen(3))
    assert (boxes >= 0).all()
    assert (boxes <= 255).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all()
    assert (boxes[:, 1] <= boxes[:, 3]).all()
    small = boxes[:1000] - tight[:1000]
    assert small[:, 0].std().item() == pytest.approx(10.0, rel=0.1)
    assert small[:, 1].std().item() == pytest.approx(5.0, rel=0.1)
    large = (boxes[1000:2000] - tight[1000:2000]).abs()
    assert large.max() <= 20.0 + 1e-4
    assert large.max() > 19.0
    assert (boxes[2000:, :2] >= 0).all()
    assert (boxes[2000:, :2] == 0).any()


def test_same_seed_same_prompts_other_seed_other_prompts() -> None:
    gt = torch.zeros((20, 32, 32), dtype=torch.bool)
    gt[:, 5:25, 8:30] = True
    first = (positive_points(gt, 64, gen(7))[0], noisy_boxes(gt, 64, gen(7)))
    again = (positive_points(gt, 64, gen(7))[0], noisy_boxes(gt, 64, gen(7)))
    other = (positive_points(gt, 64, gen(8))[0], noisy_boxes(gt, 64, gen(8)))
    assert torch.equal(first[0], again[0])
    assert torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[1], other[1])
