"""ResizeLongestSide: sizes, pixels, coordinates."""

import numpy as np
import pytest
import torch
from PIL import Image

from engine.sam.transforms import ResizeLongestSide

resize = ResizeLongestSide(1024)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((300, 200), (1024, 683)),  # 682.67 rounds half up
        ((180, 320), (576, 1024)),
        ((1, 1), (1024, 1024)),
        ((10000, 300), (1024, 31)),
        ((1, 5000), (1, 1024)),  # never 0 rows (0.2 would round to 0)
        ((1024, 1024), (1024, 1024)),
    ],
)
def test_preprocess_shape_scales_the_longest_side_to_1024(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert ResizeLongestSide.get_preprocess_shape(*size, 1024) == expected


def test_apply_image_is_pillow_bilinear_with_antialiasing() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    resized = resize.apply_image(image)
    expected = np.asarray(Image.fromarray(image).resize((683, 1024), Image.Resampling.BILINEAR))
    assert resized.shape == (1024, 683, 3)
    assert resized.dtype == np.uint8
    assert np.array_equal(resized, expected)
    assert resized.flags.writeable


def test_apply_coords_scales_each_axis_by_its_own_factor() -> None:
    coords = np.array([[100, 150], [200, 300]])
    moved = resize.apply_coords(coords, (300, 200))
    expected = np.array([[100 * 683 / 200, 150 * 1024 / 300], [683.0, 1024.0]])
    np.testing.assert_allclose(moved, expected)
    assert coords.tolist() == [[100, 150], [200, 300]]  # input untouched


def test_apply_boxes_moves_both_corners() -> None:
    boxes = np.array([[10, 20, 110, 220]], dtype=np.float64)
    moved = resize.apply_boxes(boxes, (300, 200))
    assert moved.shape == (1, 4)
    np.testing.assert_allclose(moved[0, 2:], resize.apply_coords(boxes[0, 2:], (300, 200)))


def test_torch_variants_agree_with_numpy() -> None:
    coords = np.array([[[12.5, 40.0], [199.0, 1.0]]])
    boxes = np.array([[1.0, 2.0, 150.0, 290.0]])
    np.testing.assert_allclose(
        resize.apply_coords_torch(torch.tensor(coords), (300, 200)).numpy(),
        resize.apply_coords(coords, (300, 200)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        resize.apply_boxes_torch(torch.tensor(boxes), (300, 200)).numpy(),
        resize.apply_boxes(boxes, (300, 200)),
        rtol=1e-6,
    )
    image = torch.rand(2, 3, 300, 200)
    assert resize.apply_image_torch(image).shape == (2, 3, 1024, 683)
