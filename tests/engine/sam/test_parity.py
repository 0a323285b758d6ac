"""Numerical parity with the official segment-anything package, against committed goldens.

The goldens (tests/engine/sam/goldens) were produced by tools/goldens/make_sam_goldens.py with
the official package on a tiny real-architecture model with seeded random weights.
"""

import copy
from typing import Any

import numpy as np
import pytest
import torch

from engine.sam.modeling import Sam
from engine.sam.modeling.vit_block import Block
from engine.sam.predictor import SamPredictor

EMBEDDING_REL_TOL = 1e-4
IOU_TOL = 1e-4
MASK_PIXEL_FRACTION = 1e-3
# The goldens store low-res logits as float16 (half a unit in the last place is ~5e-4 at 1.0).
LOW_RES_TOL = 2e-3


def golden_masks(goldens: dict[str, np.ndarray], case: int) -> np.ndarray:
    shape = tuple(int(v) for v in goldens[f"case{case}/masks_shape"])
    bits = np.unpackbits(goldens[f"case{case}/masks_packed"])[: int(np.prod(shape))]
    return bits.reshape(shape).astype(bool)


def case_kwargs(goldens: dict[str, np.ndarray], case: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"multimask_output": bool(goldens[f"case{case}/multimask"])}
    for key in ("point_coords", "point_labels", "box"):
        if f"case{case}/{key}" in goldens:
            kwargs[key] = goldens[f"case{case}/{key}"]
    return kwargs


@pytest.fixture(scope="module")
def parity_run(golden_sam: Sam, goldens: dict[str, np.ndarray]) -> dict[str, Any]:
    """Our predictor on every golden image and case, mask feedback from our own logits."""
    predictor = SamPredictor(golden_sam)
    embeddings: dict[int, np.ndarray] = {}
    outputs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    best_logits: dict[int, np.ndarray] = {}
    for image_index in range(int(goldens["n_images"])):
        predictor.set_image(goldens[f"img{image_index}/image"])
        embeddings[image_index] = predictor.get_image_embedding().numpy().copy()
        for case in range(int(goldens["n_cases"])):
            if int(goldens[f"case{case}/image_index"]) != image_index:
                continue
            kwargs = case_kwargs(goldens, case)
            mask_from = int(goldens[f"case{case}/mask_from"])
            if mask_from >= 0:
                kwargs["mask_input"] = best_logits[mask_from][None]
            masks, iou, low_res = predictor.predict(**kwargs)
            best_logits[case] = low_res[int(np.argmax(iou))]
            outputs[case] = (masks, iou, low_res)
    return {"embeddings": embeddings, "outputs": outputs}


def test_golden_cases_cover_every_prompt_kind(goldens: dict[str, np.ndarray]) -> None:
    cases = range(int(goldens["n_cases"]))
    assert any(f"case{c}/box" in goldens and f"case{c}/point_coords" not in goldens for c in cases)
    assert any(f"case{c}/box" in goldens and f"case{c}/point_coords" in goldens for c in cases)
    assert any(int(goldens[f"case{c}/mask_from"]) >= 0 for c in cases)
    assert any(bool(goldens[f"case{c}/multimask"]) for c in cases)
    shapes = {tuple(goldens[f"img{i}/image"].shape) for i in range(int(goldens["n_images"]))}
    assert all(h != w for h, w, _ in shapes)


def test_image_embedding_matches_official(
    parity_run: dict[str, Any], goldens: dict[str, np.ndarray]
) -> None:
    for image_index, ours in parity_run["embeddings"].items():
        official = goldens[f"img{image_index}/embedding"]
        assert ours.shape == official.shape == (1, 64, 64, 64)
        scale = float(np.abs(official).max())
        assert float(np.abs(ours - official).max()) <= EMBEDDING_REL_TOL * scale


def test_iou_predictions_match_official(
    parity_run: dict[str, Any], goldens: dict[str, np.ndarray]
) -> None:
    for case, (_, iou, _) in parity_run["outputs"].items():
        official = goldens[f"case{case}/iou"]
        assert iou.dtype == np.float32
        assert iou.shape == official.shape
        np.testing.assert_allclose(iou, official, rtol=0, atol=IOU_TOL)


def test_masks_match_official(parity_run: dict[str, Any], goldens: dict[str, np.ndarray]) -> None:
    for case, (masks, _, _) in parity_run["outputs"].items():
        official = golden_masks(goldens, case)
        assert masks.dtype == np.bool_
        assert masks.shape == official.shape
        assert float((masks != official).mean()) <= MASK_PIXEL_FRACTION
        assert 0.01 < float(official.mean()) < 0.99  # the golden masks are not trivial


def test_low_res_logits_match_official(
    parity_run: dict[str, Any], goldens: dict[str, np.ndarray]
) -> None:
    for case, (_, _, low_res) in parity_run["outputs"].items():
        official = goldens[f"case{case}/low_res"].astype(np.float32)
        assert low_res.dtype == np.float32
        assert low_res.shape[1:] == (256, 256)
        np.testing.assert_allclose(low_res[:, ::2, ::2], official, rtol=0, atol=LOW_RES_TOL)


def test_the_embedding_bar_catches_a_missing_relative_position_bias(
    golden_sam: Sam, goldens: dict[str, np.ndarray]
) -> None:
    """Negative control: one zeroed relative-position table breaks the embedding bar."""
    broken = copy.deepcopy(golden_sam)
    with torch.no_grad():
        block = broken.image_encoder.blocks[1]
        assert isinstance(block, Block)
        block.attn.rel_pos_w.zero_()
    predictor = SamPredictor(broken)
    predictor.set_image(goldens["img0/image"])
    official = goldens["img0/embedding"]
    diff = float(np.abs(predictor.get_image_embedding().numpy() - official).max())
    assert diff > 100 * EMBEDDING_REL_TOL * float(np.abs(official).max())
