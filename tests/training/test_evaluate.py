"""Evaluation protocol: clicks on hand-made masks, then evaluate() on small real models."""

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from engine.sam.build import build_sam_from_config
from engine.sam.config import VIT_TINY
from engine.sam.embedding import embed_images
from engine.sam.modeling import Sam
from engine.sam.transforms import ResizeLongestSide
from training.loop.data import TrainSample, masks_to_frame, samples_from_scenes
from training.loop.evaluate import POINTS, EvalMetrics, evaluate, next_click
from training.loop.scenes import generate_scene

IMAGE_SIZE = 256  # 16 x 16 embeddings, 64 x 64 low-res masks: the real layout, 16x less work
SCENE_SIZE = (96, 128)


def small_sam(seed: int = 0) -> Sam:
    torch.manual_seed(seed)
    return build_sam_from_config(dataclasses.replace(VIT_TINY, image_size=IMAGE_SIZE))


def brute_depth(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every mask pixel to the nearest pixel outside the mask, the image
    border counting as outside (0 outside the mask); brute force, independent of scipy."""
    padded = np.pad(mask, 1)
    inside, outside = np.argwhere(padded), np.argwhere(~padded)
    squared = ((inside[:, None, :] - outside[None, :, :]) ** 2).sum(-1).min(1)
    depth = np.zeros(padded.shape)
    depth[inside[:, 0], inside[:, 1]] = np.sqrt(squared)
    return depth[1:-1, 1:-1]


def scene_samples(seeds: range, domain: str = "A") -> list[TrainSample]:
    return samples_from_scenes(generate_scene(seed, domain, SCENE_SIZE) for seed in seeds)


@pytest.fixture(scope="module")
def samples() -> list[TrainSample]:
    return scene_samples(range(2))


# -- next_click ---------------------------------------------------------------------------


def test_first_click_on_an_odd_square_is_its_centre() -> None:
    gt = np.zeros((40, 60), dtype=bool)
    gt[10:21, 30:41] = True  # 11 x 11, centre (row 15, col 35)
    assert next_click(None, gt) == (35, 15, True)


def test_first_click_ties_break_to_the_first_pixel_in_row_major_order() -> None:
    gt = np.zeros((40, 60), dtype=bool)
    gt[10:20, 30:40] = True  # 10 x 10: four equally deep centre pixels, rows/cols 14-15
    assert next_click(None, gt) == (34, 14, True)
    assert next_click(None, gt) == next_click(None, gt.copy())


def test_first_click_on_an_l_goes_into_the_thick_arm_at_the_deepest_pixel() -> None:
    gt = np.zeros((50, 50), dtype=bool)
    gt[3:43, 3:17] = True  # thick vertical arm, 14 wide
    gt[37:43, 3:47] = True  # thin horizontal arm, 6 high
    click = next_click(None, gt)
    assert click is not None
    x, y, positive = click
    depth = brute_depth(gt)
    assert positive
    assert depth[y, x] == depth.max()
    assert 3 <= x < 17  # in the thick arm,
    assert y < 37  # above the corner
    assert abs(x - 9.5) <= 1  # centred across the arm


def test_the_image_border_counts_as_boundary() -> None:
    gt = np.zeros((30, 60), dtype=bool)
    gt[:21, :21] = True  # touches the top and left borders; the deepest pixel without the
    assert next_click(None, gt) == (10, 10, True)  # border as boundary would be (0, 0)


def test_false_negatives_give_a_positive_click_at_their_deepest_point() -> None:
    gt = np.zeros((60, 60), dtype=bool)
    gt[10:50, 10:50] = True
    predicted = np.zeros_like(gt)
    predicted[10:50, 10:20] = True  # the left quarter found, 40 x 30 missed on the right
    predicted[0:3, 0:3] = True  # a small false positive elsewhere
    x, y, positive = next_click(predicted, gt) or (0, 0, False)
    missed = gt & ~predicted
    assert positive
    assert missed[y, x]
    assert brute_depth(missed)[y, x] == brute_depth(missed).max()


def test_a_deeper_false_positive_gives_a_negative_click_inside_it() -> None:
    gt = np.zeros((60, 80), dtype=bool)
    gt[10:30, 10:30] = True
    predicted = gt.copy()
    predicted[10:30, 10:12] = False  # a thin false negative
    predicted[35:58, 40:75] = True  # a big false positive
    x, y, positive = next_click(predicted, gt) or (0, 0, True)
    assert not positive
    assert predicted[y, x]
    assert not gt[y, x]
    # 23 x 35 blob: depth 12 on row 46, cols 51-63; the first of them in row-major order.
    assert (x, y) == (51, 46)


def test_adjacent_false_negative_and_positive_are_measured_separately() -> None:
    gt = np.zeros((40, 40), dtype=bool)
    gt[:, :20] = True
    predicted = np.zeros_like(gt)
    predicted[:, 10:30] = True  # FN cols 0-9, FP cols 20-29, touching the right answer
    x, _, positive = next_click(predicted, gt) or (0, 0, False)
    # Both are 10 wide: equally deep, so the false negative wins the tie; its depth is
    # measured against the FP-free prediction edge at col 10, not through the union.
    assert positive
    assert 0 <= x < 10


def test_no_click_when_there_is_no_error() -> None:
    gt = np.zeros((10, 10), dtype=bool)
    assert next_click(None, gt) is None
    gt[2:5, 2:5] = True
    assert next_click(gt.copy(), gt) is None


def test_next_click_rejects_bad_masks() -> None:
    gt = np.zeros((10, 10), dtype=bool)
    with pytest.raises(ValueError, match="bool"):
        next_click(None, gt.astype(np.uint8))
    with pytest.raises(ValueError, match="differ in shape"):
        next_click(np.zeros((10, 11), dtype=bool), gt)
    with pytest.raises(ValueError, match="H x W"):
        next_click(None, np.zeros((2, 10, 10), dtype=bool))


# -- evaluate -----------------------------------------------------------------------------


class DecoderRows:
    """Counts the prompts (batch rows) each mask-decoder call answers."""

    def __init__(self, model: Sam) -> None:
        self.calls: list[tuple[int, int]] = []  # (rows, candidates)
        self.handle = model.mask_decoder.register_forward_hook(self._hook)

    def _hook(self, _: nn.Module, args: tuple[Any, ...], out: tuple[torch.Tensor, ...]) -> None:
        self.calls.append((int(out[0].shape[0]), int(out[0].shape[1])))

    def remove(self) -> None:
        self.handle.remove()


def test_metrics_are_in_range_and_count_every_nonempty_mask(samples: list[TrainSample]) -> None:
    model = small_sam()
    metrics = evaluate(model, samples, max_clicks=12)
    assert isinstance(metrics, EvalMetrics)
    assert set(metrics.miou) == set(POINTS)
    assert all(0.0 <= value <= 1.0 for value in metrics.miou.values())
    assert 0.0 <= metrics.miou_box <= 1.0
    assert 1.0 <= metrics.clicks_to_target <= 12.0
    assert metrics.masks == sum(len(s.masks) for s in samples)
    assert metrics.images == 2
    assert metrics.to_dict() == {
        "miou@1": metrics.miou[1],
        "miou@2": metrics.miou[2],
        "miou@3": metrics.miou[3],
        "miou@5": metrics.miou[5],
        "miou@9": metrics.miou[9],
        "miou_box": metrics.miou_box,
        "clicks_to_0.9": metrics.clicks_to_target,
        "masks": metrics.masks,
        "images": 2,
    }


def test_evaluation_is_deterministic_and_leaves_the_model_as_it_was(
    samples: list[TrainSample],
) -> None:
    model = small_sam()
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    first = evaluate(model, samples, max_clicks=10)
    assert model.training
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert evaluate(model, samples, max_clicks=10) == first


def test_unreached_target_runs_max_clicks_and_counts_the_cap(samples: list[TrainSample]) -> None:
    model = small_sam()
    masks = sum(len(s.masks) for s in samples)
    rows = DecoderRows(model)
    try:
        # IoU 1.0 is out of reach for a random model: every mask gets every click.
        metrics = evaluate(model, samples[:1], max_clicks=12, target_iou=1.0)
    finally:
        rows.remove()
    first_masks = len(samples[0].masks)
    assert metrics.clicks_to_target == 12.0
    # One box call, then 12 clicks for all masks together; only the first click is multimask.
    assert rows.calls == [(first_masks, 1), (first_masks, 3)] + [(first_masks, 1)] * 11
    assert masks > first_masks


def test_clicks_continue_to_nine_points_even_with_a_smaller_cap(
    samples: list[TrainSample],
) -> None:
    model = small_sam()
    rows = DecoderRows(model)
    try:
        metrics = evaluate(model, samples[:1], max_clicks=3, target_iou=1.0)
    finally:
        rows.remove()
    assert metrics.clicks_to_target == 3.0
    assert len(rows.calls) == 1 + max(POINTS)  # the box, then a measured miou@9
    assert all(0.0 <= value <= 1.0 for value in metrics.miou.values())


def test_reached_target_stops_after_the_last_reported_point(samples: list[TrainSample]) -> None:
    model = small_sam()
    rows = DecoderRows(model)
    try:
        # Any overlap reaches this target, so no mask needs more than the 9 reported clicks.
        metrics = evaluate(model, samples[:1], max_clicks=20, target_iou=1e-9)
    finally:
        rows.remove()
    assert len(rows.calls) <= 1 + max(POINTS)
    assert metrics.clicks_to_target < 20.0


def test_stored_embeddings_replace_the_encoder_and_give_the_same_metrics(
    samples: list[TrainSample],
) -> None:
    model = small_sam()
    computed = evaluate(model, samples, max_clicks=9)
    encoded = embed_images(model, [s.image for s in samples])
    stored = {s.key: e.embedding for s, e in zip(samples, encoded, strict=True)}
    calls: list[int] = []
    handle = model.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        assert evaluate(model, samples, max_clicks=9, embeddings=stored) == computed
    finally:
        handle.remove()
    assert calls == []


def test_zero_area_masks_and_maskless_images_are_skipped(samples: list[TrainSample]) -> None:
    model = small_sam()
    empty = np.zeros(SCENE_SIZE, dtype=bool)
    padded = [
        TrainSample(key=samples[0].key, image=samples[0].image, masks=(*samples[0].masks, empty)),
        TrainSample(key="blank", image=samples[1].image, masks=(empty,)),
    ]
    with_empty = evaluate(model, padded, max_clicks=9)
    assert with_empty == evaluate(model, samples[:1], max_clicks=9)
    assert with_empty.images == 1


def test_bad_input_raises_clear_errors(samples: list[TrainSample]) -> None:
    model = small_sam()
    empty = np.zeros(SCENE_SIZE, dtype=bool)
    blank = TrainSample(key="blank", image=samples[0].image, masks=(empty,))
    with pytest.raises(ValueError, match="no samples"):
        evaluate(model, [])
    with pytest.raises(ValueError, match="no non-empty mask"):
        evaluate(model, [blank])
    with pytest.raises(ValueError, match="max_clicks"):
        evaluate(model, samples, max_clicks=0)
    with pytest.raises(ValueError, match="target_iou"):
        evaluate(model, samples, target_iou=1.5)
    with pytest.raises(ValueError, match="embedding must be a tensor"):
        evaluate(model, samples, embeddings={samples[0].key: torch.zeros(1, 8, 4, 4)})


def test_a_decoder_fit_to_first_clicks_scores_higher_at_one_point() -> None:
    # The paper's focal-dominated loss first drives a random tiny model to empty masks for
    # longer than a unit test can train, so the fitted model is made directly: 30 AdamW steps
    # of dice on every candidate (whichever the IoU head picks) for each mask's first click.
    train = scene_samples(range(1))
    sample = train[0]
    model = small_sam()
    before = evaluate(model, train, max_clicks=9)

    embedding = embed_images(model, [sample.image])[0].embedding
    gt = masks_to_frame(sample.masks, IMAGE_SIZE, IMAGE_SIZE // 4).float()[:, None]
    clicks = [next_click(None, mask) for mask in sample.masks]
    pixels = np.array([[click[:2]] for click in clicks if click is not None], dtype=np.float64)
    moved = ResizeLongestSide(IMAGE_SIZE).apply_coords(pixels, SCENE_SIZE)
    points = (
        torch.as_tensor(moved, dtype=torch.float),
        torch.ones(len(pixels), 1, dtype=torch.int),
    )
    optimizer = torch.optim.AdamW(model.mask_decoder.parameters(), lr=3e-3)
    for _ in range(30):
        sparse, dense = model.prompt_encoder(points=points, boxes=None, masks=None)
        low_res, _ = model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        prob = low_res.sigmoid()
        inter = (prob * gt).flatten(2).sum(-1)
        total = prob.flatten(2).sum(-1) + gt.flatten(2).sum(-1)
        loss = (1 - (2 * inter + 1) / (total + 1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate(model, train, max_clicks=9)
    assert after.miou[1] > before.miou[1] + 0.2
