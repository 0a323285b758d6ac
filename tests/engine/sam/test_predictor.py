"""SamPredictor: the official interface, stored embeddings, and bad input at the boundary."""

import numpy as np
import pytest
import torch

from engine.sam.modeling import Sam
from engine.sam.predictor import SamPredictor
from engine.sam.prompts import as_rgb_uint8

POINT = np.array([[100.0, 150.0]])
LABEL = np.array([1])


def test_predict_returns_official_shapes_and_dtypes(embedded_predictor: SamPredictor) -> None:
    masks, iou, low_res = embedded_predictor.predict(POINT, LABEL)
    assert (masks.shape, masks.dtype) == ((3, 300, 200), np.bool_)
    assert (iou.shape, iou.dtype) == ((3,), np.float32)
    assert (low_res.shape, low_res.dtype) == ((3, 256, 256), np.float32)
    single, iou_single, _ = embedded_predictor.predict(POINT, LABEL, multimask_output=False)
    assert single.shape == (1, 300, 200)
    assert iou_single.shape == (1,)


def test_return_logits_gives_the_thresholded_masks_logits(embedded_predictor: SamPredictor) -> None:
    masks, _, _ = embedded_predictor.predict(POINT, LABEL)
    logits, _, _ = embedded_predictor.predict(POINT, LABEL, return_logits=True)
    assert logits.dtype == np.float32
    assert np.array_equal(logits > 0.0, masks)


def test_a_stored_embedding_gives_the_same_masks_as_the_encoder(golden_sam: Sam) -> None:
    image = np.random.default_rng(3).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    encoded = SamPredictor(golden_sam)
    encoded.set_image(image)
    stored = SamPredictor(golden_sam)
    stored.set_embedding(encoded.get_image_embedding().clone(), (120, 90), input_size=(1024, 768))
    assert stored.input_size == encoded.input_size == (1024, 768)
    first = encoded.predict(np.array([[40.0, 60.0]]), np.array([1]), box=np.array([5, 5, 80, 100]))
    second = stored.predict(np.array([[40.0, 60.0]]), np.array([1]), box=np.array([5, 5, 80, 100]))
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)


def test_predict_torch_batches_prompts_like_single_calls(embedded_predictor: SamPredictor) -> None:
    points = np.array([[[20.0, 30.0]], [[150.0, 250.0]]])
    transform = embedded_predictor.transform
    coords = torch.as_tensor(transform.apply_coords(points, (300, 200)), dtype=torch.float)
    labels = torch.ones((2, 1), dtype=torch.int)
    masks, iou, low_res = embedded_predictor.predict_torch(coords, labels)
    assert masks.shape == (2, 3, 300, 200)
    assert iou.shape == (2, 3)
    assert low_res.shape == (2, 3, 256, 256)
    for index in range(2):
        _, single_iou, single_low = embedded_predictor.predict(points[index], np.array([1]))
        np.testing.assert_allclose(iou[index].numpy(), single_iou, atol=1e-5)
        np.testing.assert_allclose(low_res[index].numpy(), single_low, atol=1e-4)


def test_reset_image_forgets_the_embedding(embedded_predictor: SamPredictor) -> None:
    embedded_predictor.reset_image()
    assert not embedded_predictor.is_image_set
    with pytest.raises(RuntimeError, match="image must be set"):
        embedded_predictor.predict(POINT, LABEL)
    with pytest.raises(RuntimeError, match="image must be set"):
        embedded_predictor.get_image_embedding()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"point_coords": np.array([[np.nan, 3.0]]), "point_labels": LABEL}, "NaN"),
        ({"point_coords": np.array([[1.0, 2.0, 3.0]]), "point_labels": LABEL}, "N x 2"),
        ({"point_coords": np.zeros((0, 2)), "point_labels": np.zeros(0)}, "N >= 1"),
        ({"point_coords": POINT, "point_labels": np.array([1, 0])}, r"shape \(1,\)"),
        ({"point_coords": POINT, "point_labels": np.array([2])}, "0 .background. or 1"),
        ({"point_coords": POINT}, "point_labels must be given"),
        ({"point_labels": LABEL}, "without point_coords"),
        ({"point_coords": np.array([[201.0, 10.0]]), "point_labels": LABEL}, "outside"),
        ({"point_coords": np.array([[10.0, -1.0]]), "point_labels": LABEL}, "outside"),
        ({"box": np.array([50.0, 10.0, 40.0, 60.0])}, "x1 >= x0"),
        ({"box": np.array([10.0, 60.0, 40.0, 50.0])}, "y1 >= y0"),
        ({"box": np.array([10.0, 20.0, 30.0])}, "4 values"),
        ({"box": np.array([[10.0, 20.0], [30.0, 40.0]])}, "4 values"),
        ({"box": np.array([0.0, 0.0, 250.0, 100.0])}, "outside"),
        ({"box": np.array([0.0, np.inf, 20.0, 100.0])}, "NaN or infinite"),
        ({"mask_input": np.zeros((1, 128, 128))}, "1 x 256 x 256"),
        ({"mask_input": np.full((1, 256, 256), np.nan)}, "NaN"),
        ({}, "no prompt"),
    ],
)
def test_bad_prompts_raise_value_error(
    embedded_predictor: SamPredictor, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        embedded_predictor.predict(**kwargs)  # type: ignore[arg-type]


def test_edge_points_and_a_degenerate_box_are_accepted(embedded_predictor: SamPredictor) -> None:
    masks, _, _ = embedded_predictor.predict(
        np.array([[0.0, 0.0], [200.0, 300.0]]), np.array([1, 0]), box=np.array([5, 5, 5, 5])
    )
    assert masks.shape == (3, 300, 200)


def test_mask_input_alone_and_as_256x256_are_accepted(embedded_predictor: SamPredictor) -> None:
    _, _, low_res = embedded_predictor.predict(POINT, LABEL)
    masks, _, _ = embedded_predictor.predict(mask_input=low_res[0], multimask_output=False)
    assert masks.shape == (1, 300, 200)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embedding": torch.zeros(1, 256, 64, 64), "original_size": (300, 200)}, "shape"),
        ({"embedding": torch.zeros(1, 64, 64, 64), "original_size": (0, 200)}, "positive"),
        (
            {
                "embedding": torch.zeros(1, 64, 64, 64),
                "original_size": (300, 200),
                "input_size": (1024, 1024),
            },
            "does not follow",
        ),
        ({"embedding": torch.full((1, 64, 64, 64), float("nan")), "original_size": (3, 2)}, "NaN"),
    ],
)
def test_bad_stored_embeddings_raise_value_error(
    golden_sam: Sam, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SamPredictor(golden_sam).set_embedding(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("coords", "labels", "boxes", "message"),
    [
        (torch.zeros(2, 1, 3), torch.ones(2, 1), None, "B x N x 2"),
        (torch.zeros(2, 1, 2), torch.ones(2, 2), None, "point_labels must be"),
        (torch.zeros(2, 1, 2), None, None, "together"),
        (torch.zeros(2, 1, 2), torch.ones(2, 1), torch.zeros(3, 4), "batch sizes differ"),
        (None, None, torch.zeros(3, 5), "B x 4"),
        (None, None, None, "no prompt"),
    ],
)
def test_bad_batched_prompts_raise_value_error(
    embedded_predictor: SamPredictor,
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        embedded_predictor.predict_torch(coords, labels, boxes)


def test_grayscale_rgba_and_bgr_images_become_rgb() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(as_rgb_uint8(gray, "RGB"), np.stack([gray] * 3, axis=-1))
    assert np.array_equal(as_rgb_uint8(gray[:, :, None], "RGB")[:, :, 2], gray)
    rgba = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    assert np.array_equal(as_rgb_uint8(rgba, "RGB"), rgba[:, :, :3])
    assert np.array_equal(as_rgb_uint8(rgba[:, :, :3], "BGR"), rgba[:, :, 2::-1])


@pytest.mark.parametrize(
    ("image", "image_format", "message"),
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "RGB", "uint8"),
        (np.zeros((10, 10, 2), dtype=np.uint8), "RGB", "shape"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "RGB", "empty"),
        (np.zeros((10, 10, 3), dtype=np.uint8), "HSV", "image_format"),
        ([[1, 2], [3, 4]], "RGB", "numpy array"),
    ],
)
def test_bad_images_raise_value_error(
    golden_sam: Sam, image: object, image_format: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SamPredictor(golden_sam).set_image(image, image_format)  # type: ignore[arg-type]


def test_set_torch_image_checks_the_resized_shape(golden_sam: Sam) -> None:
    with pytest.raises(ValueError, match="max\\(h, w\\) = 1024"):
        SamPredictor(golden_sam).set_torch_image(torch.zeros(1, 3, 512, 300), (512, 300))


@pytest.mark.parametrize("shape", [(1, 1), (10000, 300)])
def test_extreme_image_sizes_give_masks_at_the_original_size(
    golden_sam: Sam, shape: tuple[int, int]
) -> None:
    image = np.full((*shape, 3), 90, dtype=np.uint8)
    predictor = SamPredictor(golden_sam)
    predictor.set_image(image)
    masks, iou, _ = predictor.predict(np.array([[0.5, 0.5]]), np.array([1]))
    assert masks.shape == (3, *shape)
    assert np.all(np.isfinite(iou))


def test_sam_forward_matches_the_predictor(golden_sam: Sam) -> None:
    image = np.random.default_rng(4).integers(0, 256, (200, 150, 3), dtype=np.uint8)
    predictor = SamPredictor(golden_sam)
    predictor.set_image(image)
    masks, iou, low_res = predictor.predict(np.array([[70.0, 90.0]]), np.array([1]))
    resized = torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)
    coords = predictor.transform.apply_coords(np.array([[[70.0, 90.0]]]), (200, 150))
    with torch.no_grad():
        (output,) = golden_sam(
            [
                {
                    "image": resized.float(),
                    "original_size": (200, 150),
                    "point_coords": torch.as_tensor(coords, dtype=torch.float),
                    "point_labels": torch.ones((1, 1), dtype=torch.int),
                }
            ],
            multimask_output=True,
        )
    np.testing.assert_allclose(output["iou_predictions"][0].numpy(), iou, atol=1e-5)
    np.testing.assert_allclose(output["low_res_logits"][0].numpy(), low_res, atol=1e-4)
    assert float((output["masks"][0].numpy() != masks).mean()) < 1e-3
