from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from annotation.errors import ConflictError, InvalidMask
from annotation.models import Image, Mask, Project, Stage
from annotation.services.masks import mask_create, masks_bulk_create

pytestmark = pytest.mark.django_db

H, W = 30, 40


@pytest.fixture
def image() -> Image:
    project = Project.objects.create(name="masks", stage=Stage.SEMI_AUTOMATIC)
    return Image.objects.create(
        project=project,
        blob_key="images/" + "a" * 64,
        sha256="a" * 64,
        width=W,
        height=H,
        format="PNG",
        byte_size=10,
    )


def _square() -> np.ndarray:
    pixels = np.zeros((H, W), dtype=bool)
    pixels[5:15, 10:30] = True
    return pixels


def _decoded(mask: Mask) -> np.ndarray:
    return mask_utils.decode({"size": [H, W], "counts": mask.rle_counts.encode()}).astype(bool)


def test_binary_mask_is_stored_as_compressed_rle_with_area_and_bbox(image):
    mask = mask_create(image=image, binary=_square(), source="manual")
    mask.refresh_from_db()
    assert isinstance(mask.rle_counts, str)
    assert np.array_equal(_decoded(mask), _square())
    assert mask.area == 200
    assert mask.bbox == [10, 5, 20, 10]
    assert mask.project_id == image.project_id
    assert mask.stage == Stage.SEMI_AUTOMATIC  # the project's stage by default
    assert mask.status == Mask.Status.ACCEPTED


def test_uint8_binary_mask_is_accepted(image):
    mask = mask_create(image=image, binary=_square().astype(np.uint8), source="assisted")
    assert mask.area == 200


def test_compressed_rle_as_bytes_or_str_is_stored_pixel_for_pixel(image):
    rle = mask_utils.encode(np.asfortranarray(_square(), dtype=np.uint8))
    from_bytes = mask_create(image=image, rle=rle, source="manual")
    as_str = {"size": [H, W], "counts": rle["counts"].decode()}
    from_str = mask_create(image=image, rle=as_str, source="manual")
    assert from_bytes.rle_counts == from_str.rle_counts == rle["counts"].decode()
    assert np.array_equal(_decoded(from_str), _square())


def test_uncompressed_rle_list_counts_is_stored_compressed(image):
    # Column-major runs: 5 background pixels, 3 foreground, the rest background.
    counts = [5, 3, H * W - 8]
    mask = mask_create(image=image, rle={"size": [H, W], "counts": counts}, source="prefill")
    expected = np.zeros(H * W, dtype=bool)
    expected[5:8] = True
    assert np.array_equal(_decoded(mask), expected.reshape((W, H)).T)
    assert mask.area == 3


def test_non_canonical_uncompressed_rle_is_stored_in_canonical_form(image):
    counts = [5, 0, 0, 3, H * W - 8]  # zero-length runs are legal but not canonical
    mask = mask_create(image=image, rle={"size": [H, W], "counts": counts}, source="manual")
    canonical = mask_utils.encode(np.asfortranarray(_decoded(mask), dtype=np.uint8))
    assert mask.rle_counts == canonical["counts"].decode()
    assert mask.area == 3


def test_automatic_mask_keeps_its_scores_and_points(image):
    mask = mask_create(
        image=image,
        binary=_square(),
        source="automatic",
        stage="fully_automatic",
        predicted_iou=0.93,
        stability_score=0.97,
        point_coords=[[12.5, 7.0]],
        crop_box=[0, 0, W, H],
    )
    mask.refresh_from_db()
    assert (mask.predicted_iou, mask.stability_score) == (0.93, 0.97)
    assert mask.point_coords == [[12.5, 7.0]]
    assert mask.crop_box == [0, 0, W, H]
    assert mask.stage == "fully_automatic"


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ({"size": [H, W], "counts": "!!garbage##"}, "not a COCO compressed RLE"),
        ({"size": [H, W], "counts": "ab"}, "not a COCO compressed RLE"),
        ({"size": [H, W], "counts": "héllo"}, "non-ASCII"),
        ({"size": [H, W], "counts": ""}, "empty"),
        ({"size": [H, W], "counts": []}, "empty"),
        ({"size": [H + 1, W], "counts": [5, 3, (H + 1) * W - 8]}, "does not match the image"),
        ({"size": [H], "counts": [H * W]}, "two integers"),
        ({"size": [H, W], "counts": [5, 3, 10]}, "sum to 18"),
        ({"size": [H, W], "counts": [5, -3, H * W + 3]}, "non-negative"),
        ({"size": [H, W], "counts": [5.0, 3, H * W - 8]}, "non-negative integers"),
        ({"size": [H, W], "counts": 42}, "must be a str"),
        ({"counts": "5"}, "must be a dict"),
        ({"size": [H, W], "counts": [H * W]}, "empty"),
        ([5, 3], "must be a dict"),
    ],
)
def test_malformed_rle_raises_invalid_mask_and_writes_nothing(image, rle, message):
    with pytest.raises(InvalidMask, match=message):
        mask_create(image=image, rle=rle, source="manual")
    assert Mask.objects.count() == 0


def test_compressed_counts_that_stop_short_of_the_image_are_refused(image):
    short = mask_utils.frPyObjects({"size": [H, W], "counts": [5, 3, 10]}, H, W)
    with pytest.raises(InvalidMask, match="fewer than height\\*width"):
        mask_create(image=image, rle={"size": [H, W], "counts": short["counts"]}, source="manual")
    assert Mask.objects.count() == 0


def test_compressed_counts_that_run_past_the_image_are_refused(image):
    long = mask_utils.frPyObjects({"size": [H, W], "counts": [5, 3, H * W]}, H, W)
    with pytest.raises(InvalidMask, match="run past height\\*width"):
        mask_create(image=image, rle={"size": [H, W], "counts": long["counts"]}, source="manual")
    assert Mask.objects.count() == 0


def test_compressed_rle_of_an_empty_mask_is_refused(image):
    empty = mask_utils.encode(np.zeros((H, W), dtype=np.uint8, order="F"))
    with pytest.raises(InvalidMask, match="empty"):
        mask_create(image=image, rle=empty, source="manual")
    assert Mask.objects.count() == 0


@pytest.mark.parametrize(
    ("binary", "message"),
    [
        (np.zeros((H, W), dtype=bool), "empty"),
        (np.ones((W, H), dtype=bool), "does not match the image"),
        (np.ones((H, W, 1), dtype=bool), "does not match the image"),
        (np.ones((H, W), dtype=np.float32), "dtype must be bool or uint8"),
        (np.full((H, W), 255, dtype=np.uint8), "only hold 0 and 1"),
    ],
)
def test_malformed_binary_mask_raises_invalid_mask_and_writes_nothing(image, binary, message):
    with pytest.raises(InvalidMask, match=message):
        mask_create(image=image, binary=binary, source="manual")
    assert Mask.objects.count() == 0


def test_giving_both_rle_and_binary_is_refused(image):
    rle = mask_utils.encode(np.asfortranarray(_square(), dtype=np.uint8))
    with pytest.raises(InvalidMask, match="exactly one"):
        mask_create(image=image, rle=rle, binary=_square(), source="manual")
    assert Mask.objects.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "crowd"}, "unknown source 'crowd'"),
        ({"source": "manual", "status": "maybe"}, "unknown status 'maybe'"),
        ({"source": "manual", "stage": "stage_4"}, "unknown stage 'stage_4'"),
        ({"source": "automatic", "stability_score": 1.5}, "stability_score must lie in"),
        ({"source": "automatic", "predicted_iou": float("nan")}, "predicted_iou must be finite"),
        ({"source": "manual", "seconds_spent": -1.0}, "seconds_spent must lie in"),
        ({"source": "manual", "clicks": -2}, "clicks must be a non-negative integer"),
        ({"source": "automatic", "crop_box": [0, 0, 10]}, "crop_box must be a list of 4"),
        ({"source": "automatic", "point_coords": [[1, "x"]]}, "point_coords must be a number"),
    ],
)
def test_bad_field_raises_invalid_mask_and_writes_nothing(image, kwargs, message):
    with pytest.raises(InvalidMask, match=message):
        mask_create(image=image, binary=_square(), **kwargs)
    assert Mask.objects.count() == 0


def test_repeated_idempotency_key_returns_the_stored_row(image):
    first = mask_create(image=image, binary=_square(), source="manual", idempotency_key="k-1")
    other = np.zeros((H, W), dtype=bool)
    other[0, 0] = True
    again = mask_create(image=image, binary=other, source="manual", idempotency_key="k-1")
    assert again.pk == first.pk
    assert Mask.objects.count() == 1
    assert Mask.objects.get().area == 200


def test_idempotency_key_reused_on_another_image_is_a_conflict(image):
    mask_create(image=image, binary=_square(), source="manual", idempotency_key="k-2")
    second = Image.objects.create(
        project=image.project,
        blob_key="images/" + "b" * 64,
        sha256="b" * 64,
        width=W,
        height=H,
        format="PNG",
        byte_size=10,
    )
    with pytest.raises(ConflictError, match="already used"):
        mask_create(image=second, binary=_square(), source="manual", idempotency_key="k-2")
    assert Mask.objects.count() == 1


def test_bulk_create_stores_every_record_with_its_scores(image):
    records: list[dict[str, Any]] = []
    for row in range(5):
        pixels = np.zeros((H, W), dtype=bool)
        pixels[row : row + 3, 2:9] = True
        records.append({"binary": pixels, "predicted_iou": 0.9, "stability_score": 0.96})
    records.append(
        {"segmentation": mask_utils.encode(np.asfortranarray(_square(), dtype=np.uint8))}
    )
    masks = masks_bulk_create(image=image, records=records, source="automatic")
    assert len(masks) == 6
    assert all(m.pk is not None for m in masks)
    stored = list(Mask.objects.order_by("id"))
    assert [m.area for m in stored] == [21] * 5 + [200]
    assert stored[0].stability_score == 0.96
    assert np.array_equal(_decoded(stored[5]), _square())


def test_bulk_create_with_one_bad_record_writes_nothing(image):
    records: list[dict[str, Any]] = [
        {"binary": _square()},
        {"rle": {"size": [H, W], "counts": [1, 2]}},
    ]
    with pytest.raises(InvalidMask, match="record 1: rle counts sum to 3"):
        masks_bulk_create(image=image, records=records, source="automatic")
    assert Mask.objects.count() == 0


def test_bulk_create_refuses_unknown_record_keys(image):
    with pytest.raises(InvalidMask, match="unknown record keys: colour"):
        masks_bulk_create(
            image=image, records=[{"binary": _square(), "colour": "red"}], source="automatic"
        )
    assert Mask.objects.count() == 0
