"""ONNX decoder export: the official interface, and onnxruntime agrees with the torch predictor;
its low-res variant (the browser's decoder): derived, stored at import, served."""

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
import torch

from engine.models import ModelVersion
from engine.sam.checkpoint import load_sam
from engine.sam.modeling import Sam
from engine.sam.onnx_export import (
    INPUT_NAMES,
    LOW_RES_INPUT_NAMES,
    LOW_RES_OUTPUT_NAMES,
    OUTPUT_NAMES,
    check_decoder_onnx,
    export_decoder_onnx,
    low_res_decoder_onnx,
)
from engine.sam.predictor import SamPredictor
from engine.services.registry import model_version_import, onnx_variant_key
from storage.blobs import get_blob_store
from tests.engine.conftest import GOLDEN_CHECKPOINT
from tests.factories import client_for


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


# --- the low-res variant ---------------------------------------------------------------------


def decoder_feed(count: int, *, seed: int, with_mask: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (1, count)).astype(np.float32)
    labels[0, -1] = -1
    return {
        "image_embeddings": rng.standard_normal((1, 64, 64, 64), dtype=np.float32),
        "point_coords": rng.uniform(0, 1024, (1, count, 2)).astype(np.float32),
        "point_labels": labels,
        "mask_input": rng.standard_normal((1, 1, 256, 256), dtype=np.float32) * with_mask,
        "has_mask_input": np.array([float(with_mask)], np.float32),
    }


def test_the_low_res_variant_is_the_full_graph_without_orig_im_size_and_masks(exported):
    variant = low_res_decoder_onnx(exported.read_bytes())
    graph = onnx.load_from_string(variant).graph
    assert [value.name for value in graph.input] == list(LOW_RES_INPUT_NAMES)
    assert [value.name for value in graph.output] == list(LOW_RES_OUTPUT_NAMES)
    assert "orig_im_size" not in LOW_RES_INPUT_NAMES
    full = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    low = ort.InferenceSession(variant, providers=["CPUExecutionProvider"])
    for count, with_mask in ((2, False), (5, True), (1, False)):
        feed = decoder_feed(count, seed=count, with_mask=with_mask)
        _, full_iou, full_low_res = full.run(
            list(OUTPUT_NAMES), {**feed, "orig_im_size": np.array([300, 500], np.float32)}
        )
        iou, low_res = low.run(list(LOW_RES_OUTPUT_NAMES), feed)
        assert low_res.shape == (1, 4, 256, 256)
        np.testing.assert_allclose(iou, full_iou, rtol=0, atol=1e-6)
        np.testing.assert_allclose(low_res, full_low_res, rtol=0, atol=1e-5)


def test_the_low_res_variant_refuses_what_is_not_a_decoder_export(exported):
    with pytest.raises(ValueError, match="not an ONNX model"):
        low_res_decoder_onnx(b"definitely not protobuf \xff\xff")
    once = low_res_decoder_onnx(exported.read_bytes())
    with pytest.raises(ValueError, match="not a decoder export"):
        low_res_decoder_onnx(once)  # already cut: no orig_im_size, no masks


@pytest.mark.django_db
def test_import_stores_the_low_res_variant_next_to_the_decoder(project, golden_path):
    version = model_version_import(project=project, path_or_file=golden_path)
    store = get_blob_store()
    key = onnx_variant_key(version.onnx_decoder_key, "low_res")
    assert key == f"onnx/{version.sha256}.low_res.onnx"
    stored = store.get_bytes(key)
    assert stored == low_res_decoder_onnx(store.get_bytes(version.onnx_decoder_key))


@pytest.mark.django_db
def test_the_low_res_variant_is_derived_on_first_request_then_served_with_its_etag(
    version: ModelVersion, golden_onnx: bytes, annotator_user, outsider_user
):
    key = onnx_variant_key(version.onnx_decoder_key, "low_res")
    store = get_blob_store()
    assert not store.exists(key)  # registered before the variant existed
    client = client_for(annotator_user)
    url = f"/api/model-versions/{version.pk}/onnx/?variant=low_res"
    response = client.get(url)
    assert response.status_code == 200
    expected = low_res_decoder_onnx(golden_onnx)
    assert response.content == expected
    assert store.get_bytes(key) == expected  # kept as a blob for the next request
    digest = hashlib.sha256(expected).hexdigest()
    assert response["ETag"] == f'"{digest}"'
    assert "immutable" in response["Cache-Control"]
    assert client.get(url, HTTP_IF_NONE_MATCH=f'"{digest}"').status_code == 304
    official = client.get(f"/api/model-versions/{version.pk}/onnx/?variant=official")
    assert official.content == golden_onnx
    assert client_for(outsider_user).get(url).status_code == 404


@pytest.mark.django_db
def test_an_unknown_onnx_variant_is_a_400_that_stores_nothing(version, annotator_user):
    response = client_for(annotator_user).get(
        f"/api/model-versions/{version.pk}/onnx/?variant=masks_only"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_variant"
    assert "low_res" in response.json()["detail"]
    assert not get_blob_store().exists(onnx_variant_key(version.onnx_decoder_key, "low_res"))
