"""Batched image embeddings (`embed_images`) and feeding them back to the predictor."""

import numpy as np
import pytest
import torch

from engine.sam.embedding import ImageEmbedding, embed_images
from engine.sam.modeling import Sam
from engine.sam.predictor import SamPredictor
from tests.engine.sam.test_parity import EMBEDDING_REL_TOL, case_kwargs


@pytest.fixture(scope="module")
def golden_images(goldens: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [goldens[f"img{index}/image"] for index in range(int(goldens["n_images"]))]


@pytest.fixture(scope="module")
def one_by_one(golden_sam: Sam, golden_images: list[np.ndarray]) -> list[ImageEmbedding]:
    return [embed_images(golden_sam, [image], batch_size=1)[0] for image in golden_images]


def test_embeddings_are_float32_cpu_with_the_predictor_sizes(
    one_by_one: list[ImageEmbedding], golden_images: list[np.ndarray]
) -> None:
    assert [item.original_size for item in one_by_one] == [(300, 200), (180, 320)]
    assert [item.input_size for item in one_by_one] == [(1024, 683), (576, 1024)]
    for item in one_by_one:
        assert item.embedding.shape == (1, 64, 64, 64)
        assert item.embedding.dtype == torch.float32
        assert item.embedding.device.type == "cpu"


def test_embeddings_match_the_official_goldens(
    one_by_one: list[ImageEmbedding], goldens: dict[str, np.ndarray]
) -> None:
    for index, item in enumerate(one_by_one):
        official = goldens[f"img{index}/embedding"]
        diff = float(np.abs(item.embedding.numpy() - official).max())
        assert diff <= EMBEDDING_REL_TOL * float(np.abs(official).max())


def test_a_batch_gives_the_one_by_one_embeddings(
    golden_sam: Sam, golden_images: list[np.ndarray], one_by_one: list[ImageEmbedding]
) -> None:
    images = [golden_images[0], golden_images[1], golden_images[0]]
    batched = embed_images(golden_sam, images, batch_size=2)  # a full batch and a remainder
    expected = [one_by_one[0], one_by_one[1], one_by_one[0]]
    assert len(batched) == 3
    for got, want in zip(batched, expected, strict=True):
        assert (got.original_size, got.input_size) == (want.original_size, want.input_size)
        scale = float(want.embedding.abs().max())
        assert float((got.embedding - want.embedding).abs().max()) <= EMBEDDING_REL_TOL * scale


def test_an_image_embedding_gives_the_masks_of_set_image(
    golden_sam: Sam, goldens: dict[str, np.ndarray], one_by_one: list[ImageEmbedding]
) -> None:
    direct, stored = SamPredictor(golden_sam), SamPredictor(golden_sam)
    for case in (0, 2, 5):  # points, a box, the second image
        index = int(goldens[f"case{case}/image_index"])
        direct.set_image(goldens[f"img{index}/image"])
        stored.set_embedding(one_by_one[index])
        assert stored.original_size == direct.original_size
        assert stored.input_size == direct.input_size
        masks, iou, low_res = stored.predict(**case_kwargs(goldens, case))
        want_masks, want_iou, want_low_res = direct.predict(**case_kwargs(goldens, case))
        assert np.array_equal(masks, want_masks)
        np.testing.assert_allclose(iou, want_iou, rtol=0, atol=1e-6)
        np.testing.assert_allclose(low_res, want_low_res, rtol=0, atol=1e-5)


def test_set_embedding_takes_the_tensor_and_sizes_too(
    golden_sam: Sam, one_by_one: list[ImageEmbedding]
) -> None:
    predictor = SamPredictor(golden_sam)
    item = one_by_one[1]
    predictor.set_embedding(item.embedding, item.original_size, item.input_size)
    assert predictor.input_size == (576, 1024)
    with pytest.raises(ValueError, match="alone"):
        predictor.set_embedding(item, original_size=(180, 320))
    with pytest.raises(ValueError, match="original_size"):
        predictor.set_embedding(item.embedding)


def test_bf16_embeddings_are_float32_and_close_to_fp32(
    golden_sam: Sam, golden_images: list[np.ndarray], one_by_one: list[ImageEmbedding]
) -> None:
    bf16 = embed_images(golden_sam, golden_images, precision="bf16", batch_size=2)
    for got, want in zip(bf16, one_by_one, strict=True):
        assert got.embedding.dtype == torch.float32
        relative = float((got.embedding - want.embedding).abs().max() / want.embedding.abs().max())
        assert 1e-4 < relative < 5e-2


def test_grayscale_and_rgba_are_converted_like_set_image(golden_sam: Sam) -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(40, 30), dtype=np.uint8)
    rgba = np.dstack([np.repeat(gray[:, :, None], 3, axis=2), np.full((40, 30), 7, np.uint8)])
    from_gray, from_rgba = embed_images(golden_sam, [gray, rgba], batch_size=2)
    assert torch.equal(from_gray.embedding, from_rgba.embedding)
    assert from_gray.original_size == (40, 30)


def test_no_images_give_no_embeddings(golden_sam: Sam) -> None:
    assert embed_images(golden_sam, []) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp16"}, "unknown precision"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
    ],
)
def test_bad_options_are_refused(golden_sam: Sam, kwargs: dict[str, object], message: str) -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        embed_images(golden_sam, [image], **kwargs)  # type: ignore[arg-type]


def test_bad_images_are_refused(golden_sam: Sam) -> None:
    with pytest.raises(ValueError, match="uint8"):
        embed_images(golden_sam, [np.zeros((8, 8, 3), dtype=np.float32)])
    with pytest.raises(ValueError, match="sequence"):
        embed_images(golden_sam, np.zeros((2, 8, 8, 3), dtype=np.uint8))  # type: ignore[arg-type]
