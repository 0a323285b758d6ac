"""The automatic mask generator's parts: grids, crop boxes, boxes, NMS, RLE, clean-up, options."""

import re
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from engine.sam.amg import SamAutomaticMaskGenerator, sa1b_generator_settings
from engine.sam.amg.boxes import box_nms, masks_to_boxes, near_crop_edge
from engine.sam.amg.grids import build_all_layer_point_grids, build_point_grid, generate_crop_boxes
from engine.sam.amg.regions import remove_small_regions
from engine.sam.amg.rle import mask_to_coco_rle, mask_to_rle, rle_to_mask
from engine.sam.checkpoint import load_sam
from engine.sam.modeling import Sam
from tests.engine.sam.conftest import GOLDENS


@pytest.fixture(scope="module")
def amg_sam() -> Sam:
    return load_sam(GOLDENS / "amg_tiny_sam.pth", arch="vit_tiny")


@pytest.fixture(scope="module")
def shapes_image() -> np.ndarray:
    with np.load(GOLDENS / "amg_images.npz") as data:
        return data["arr_1"][::2, ::2].copy()  # 90 x 160


def test_point_grid_is_cell_centres_row_by_row() -> None:
    expected = [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    assert build_point_grid(2).tolist() == expected


def test_layer_grids_shrink_by_the_downscale_factor() -> None:
    grids = build_all_layer_point_grids(32, 2, 2)
    assert [len(g) for g in grids] == [32 * 32, 16 * 16, 8 * 8]


def test_crop_boxes_overlap_and_are_listed_column_by_column() -> None:
    boxes, layers = generate_crop_boxes((100, 200), 1, 0.5)
    assert boxes == [
        [0, 0, 200, 100],
        [0, 0, 125, 75],
        [0, 25, 125, 100],
        [75, 0, 200, 75],
        [75, 25, 200, 100],
    ]
    assert layers == [0, 1, 1, 1, 1]


def test_masks_to_boxes_gives_inclusive_maxima_and_zeros_when_empty() -> None:
    masks = torch.zeros((2, 10, 12), dtype=torch.bool)
    masks[0, 2:5, 3:8] = True
    assert masks_to_boxes(masks).tolist() == [[3, 2, 7, 4], [0, 0, 0, 0]]


def test_box_nms_drops_overlaps_above_threshold_and_orders_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    scores = np.array([0.5, 0.9, 0.7, 0.9], dtype=np.float32)
    # box 1 (0.9) keeps; box 3 ties at 0.9 but comes later and overlaps 1 at IoU 9/11 > 0.7.
    assert box_nms(boxes, scores, 0.7).tolist() == [1, 2]


def test_box_nms_keeps_a_box_at_exactly_the_threshold_iou() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]])  # IoU 0.5
    assert box_nms(boxes, np.array([1.0, 0.5]), 0.5).tolist() == [0, 1]


def test_near_crop_edge_ignores_edges_shared_with_the_image() -> None:
    boxes = torch.tensor([[0, 0, 30, 30], [5, 50, 40, 95], [40, 40, 60, 60]])
    crop_box = [100, 0, 200, 100]  # its left edge is inside the 300 x 100 image
    flags = near_crop_edge(boxes, crop_box, [0, 0, 300, 100])
    assert flags.tolist() == [True, True, False]


def test_uncompressed_rle_round_trips_and_matches_coco_encoding() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((7, 9)) > 0.5
    mask[0, 0] = True
    rle = mask_to_rle(mask)
    assert rle["counts"][0] == 0  # a foreground first pixel starts with an empty run
    assert np.array_equal(rle_to_mask(rle), mask)
    from_runs = coco_mask.frPyObjects(rle, 7, 9)
    assert mask_to_coco_rle(mask)["counts"] == from_runs["counts"].decode("ascii")


def test_small_holes_fill_and_small_islands_go_but_the_largest_stays() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # 1 px hole
    mask[16:18, 16:18] = True  # 4 px island
    filled, changed = remove_small_regions(mask, 10, "holes")
    assert changed
    assert filled[5, 5]
    cleaned, changed = remove_small_regions(filled, 10, "islands")
    assert changed
    assert cleaned.sum() == 100
    tiny = np.zeros((20, 20), dtype=bool)
    tiny[1:3, 1:3] = True
    tiny[10:13, 10:13] = True
    kept, _ = remove_small_regions(tiny, 50, "islands")
    assert kept.sum() == 9
    assert kept[11, 11]


def test_sa1b_settings_are_the_paper_run() -> None:
    settings = sa1b_generator_settings()
    assert settings["points_per_side"] == 32
    assert settings["crop_n_layers"] == 2
    assert settings["crop_n_points_downscale_factor"] == 2
    assert settings["min_mask_region_area"] == 100
    assert settings["max_mask_area_fraction"] == 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points_per_side": None}, "exactly one of points_per_side"),
        ({"points_per_side": 0}, "points_per_side must be an integer >= 1, got 0"),
        ({"points_per_batch": 0}, "points_per_batch must be an integer >= 1, got 0"),
        ({"box_nms_thresh": 1.5}, "box_nms_thresh must be in [0, 1], got 1.5"),
        ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh must be a finite number"),
        ({"pred_iou_thresh": 5}, "pred_iou_thresh must be in [0, 1], got 5"),
        ({"stability_score_thresh": -3}, "stability_score_thresh must be in [0, 1], got -3"),
        ({"stability_score_offset": 0.0}, "stability_score_offset must be > 0, got 0.0"),
        ({"stability_score_offset": -1}, "stability_score_offset must be > 0, got -1"),
        ({"crop_nms_thresh": -0.1}, "crop_nms_thresh must be in [0, 1], got -0.1"),
        ({"crop_n_layers": -1}, "crop_n_layers must be an integer >= 0, got -1"),
        ({"crop_overlap_ratio": 1.0}, "crop_overlap_ratio must be in [0, 1), got 1.0"),
        ({"min_mask_region_area": -1}, "min_mask_region_area must be >= 0, got -1"),
        ({"output_mode": "png"}, "output_mode must be one of"),
        ({"max_mask_area_fraction": 0.0}, "max_mask_area_fraction must be in (0, 1]"),
        (
            {"points_per_side": 4, "crop_n_layers": 3, "crop_n_points_downscale_factor": 2},
            "no point",
        ),
        ({"points_per_side": None, "point_grids": [np.zeros((3, 3))]}, "must be N x 2"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(
    amg_sam: Sam, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SamAutomaticMaskGenerator(amg_sam, **kwargs)


def test_output_modes_encode_the_same_masks(amg_sam: Sam, shapes_image: np.ndarray) -> None:
    common: dict[str, Any] = {
        "points_per_side": 4,
        "pred_iou_thresh": 0.5,
        "stability_score_thresh": 0.5,
    }
    by_mode = {
        mode: SamAutomaticMaskGenerator(amg_sam, output_mode=mode, **common).generate(shapes_image)
        for mode in ("binary_mask", "uncompressed_rle", "coco_rle")
    }
    assert len(by_mode["binary_mask"]) > 0
    for binary, runs, coco in zip(*by_mode.values(), strict=True):
        mask = binary["segmentation"]
        assert mask.shape == shapes_image.shape[:2]
        assert mask.dtype == bool
        assert np.array_equal(rle_to_mask(runs["segmentation"]), mask)
        assert np.array_equal(coco_mask.decode(coco["segmentation"]).astype(bool), mask)
        assert binary["area"] == int(mask.sum())
        x, y, w, h = binary["bbox"]
        ys, xs = np.nonzero(mask)
        assert [x, y, x + w, y + h] == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_records_carry_the_official_fields(amg_sam: Sam, shapes_image: np.ndarray) -> None:
    generator = SamAutomaticMaskGenerator(
        amg_sam, points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.5
    )
    record = generator.generate(shapes_image)[0]
    assert set(record) == {
        "segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score",
        "crop_box",
    }  # fmt: skip
    assert record["crop_box"] == [0, 0, 160, 90]
    assert record["predicted_iou"] > 0.5
    assert record["stability_score"] >= 0.5
    assert len(record["point_coords"]) == 1
    assert len(record["point_coords"][0]) == 2


def test_max_mask_area_fraction_drops_only_large_masks(
    amg_sam: Sam, shapes_image: np.ndarray
) -> None:
    common: dict[str, Any] = {
        "points_per_side": 4,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    }
    every = SamAutomaticMaskGenerator(amg_sam, **common).generate(shapes_image)
    limit = float(np.median([r["area"] for r in every])) / shapes_image[..., 0].size
    capped = SamAutomaticMaskGenerator(amg_sam, max_mask_area_fraction=limit, **common)
    kept = capped.generate(shapes_image)
    expected = [r["area"] for r in every if r["area"] < limit * shapes_image[..., 0].size]
    assert [r["area"] for r in kept] == expected
    assert 0 < len(kept) < len(every)


def test_upsampling_a_subset_gives_bitwise_the_batch_values(amg_sam: Sam) -> None:
    generator = torch.Generator().manual_seed(3)
    low_res = torch.randn((6, 3, 256, 256), generator=generator)
    full = amg_sam.postprocess_masks(low_res, (683, 1024), (200, 300))
    subset = amg_sam.postprocess_masks(
        low_res.flatten(0, 1)[[1, 7, 16]][None], (683, 1024), (200, 300)
    )
    assert torch.equal(subset[0], full.flatten(0, 1)[[1, 7, 16]])
