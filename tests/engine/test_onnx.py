"""ONNX decoder export: the official interface, and onnxruntime agrees with the torch predictor."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
import torch

from engine.sam.checkpoint import load_sam
from engine.sam.modeling import Sam
from engine.sam.onnx_export import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    check_decoder_onnx,
    export_decoder_onnx,
)
from engine.sam.predictor import SamPredictor
from tests.engine.conftest import GOLDEN_CHECKPOINT


@pytest.fixture(scope="module")
def golden() -> Sam:
    return load_sam(GOLDEN_CHECKPOINT)


@pytest.fixture(scope="module")
def exported(golden: Sam, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "decoder.onnx"
    export_decoder_onnx(golden, path)
    return path


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_the_graph_has_the_official_inputs_and_outputs_with_dynamic_points(exported):
    graph = onnx.load(str(exported)).graph
    inputs = {value.name: dims(value) for value in graph.input}
    assert list(inputs) == list(INPUT_NAMES)
    assert inputs["image_embeddings"] == [1, 64, 64, 64]  # vit_tiny: 64 channels (256 official)
    assert inputs["point_coords"] == [1, "num_points", 2]
    assert inputs["point_labels"] == [1, "num_points"]
    assert inputs["mask_input"] == [1, 1, 256, 256]
    assert inputs["has_mask_input"] == [1]
    assert inputs["orig_im_size"] == [2]
    assert [value.name for value in graph.output] == list(OUTPUT_NAMES)


@pytest.mark.parametrize("size", [(480, 640), (10000, 300), (1, 1)])
def test_onnxruntime_matches_the_torch_predictor_at_any_image_size(golden, exported, size):
    check = check_decoder_onnx(golden, exported, original_size=size)
    assert check.cases == 5
    assert check.max_abs_diff_iou < 1e-4
    assert check.max_abs_diff_low_res_logits < 1e-3
    assert check.mask_pixels_differing <= 1e-3


def test_point_count_is_dynamic(golden, exported):
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    embedding = np.random.default_rng(0).standard_normal((1, 64, 64, 64), dtype=np.float32)
    for count in (1, 4, 9):
        coords = np.random.default_rng(count).uniform(0, 1024, (1, count, 2)).astype(np.float32)
        labels = np.ones((1, count), dtype=np.float32)
        labels[0, -1] = -1
        masks, iou, low_res = session.run(
            list(OUTPUT_NAMES),
            {
                "image_embeddings": embedding,
                "point_coords": coords,
                "point_labels": labels,
                "mask_input": np.zeros((1, 1, 256, 256), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array([300, 500], np.float32),
            },
        )
        assert masks.shape == (1, 4, 300, 500)
        assert iou.shape == (1, 4)
        assert low_res.shape == (1, 4, 256, 256)


def test_single_mask_export_picks_the_best_candidate_for_one_click(golden, tmp_path):
    path = tmp_path / "single.onnx"
    export_decoder_onnx(golden, path, return_single_mask=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    embedding = torch.randn((1, 64, 64, 64), generator=torch.Generator().manual_seed(3))
    predictor = SamPredictor(golden)
    predictor.set_embedding(embedding, original_size=(400, 600))
    point = np.array([[300.0, 200.0]])
    masks, iou, _ = predictor.predict(point_coords=point, point_labels=np.array([1]))
    coords = np.concatenate([predictor.transform.apply_coords(point, (400, 600)), [[0, 0]]])
    onnx_masks, onnx_iou, _ = session.run(
        list(OUTPUT_NAMES),
        {
            "image_embeddings": embedding.numpy(),
            "point_coords": coords[None].astype(np.float32),
            "point_labels": np.array([[1, -1]], np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([400, 600], np.float32),
        },
    )
    best = int(np.argmax(iou))
    assert onnx_masks.shape == (1, 1, 400, 600)
    assert abs(float(onnx_iou[0, 0]) - float(iou[best])) < 1e-4
    assert ((onnx_masks[0, 0] > 0) != masks[best]).mean() <= 1e-3
