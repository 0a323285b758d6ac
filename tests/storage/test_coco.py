"""The streaming COCO writer: pycocotools loads its output, and memory stays flat."""

import gc
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from storage.formats import CocoWriter

CATEGORIES = [{"id": 1, "name": "object", "supercategory": "object"}]
INFO = {"description": "maskloop test export", "version": "1"}


def _rle(mask: np.ndarray) -> dict[str, Any]:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def _random_masks(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[y0 : y0 + rng.integers(3, height // 2), x0 : x0 + rng.integers(3, width // 2)] = 1
        masks.append(mask)
    return masks


def _annotation(ann_id: int, image_id: int, mask: np.ndarray) -> dict[str, Any]:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "segmentation": _rle(mask),
        "area": float(mask_utils.area(encoded)),
        "bbox": [float(v) for v in mask_utils.toBbox(encoded)],
        "predicted_iou": np.float32(0.93),  # numpy scalars come straight from model output
    }


def _write(path: Path, images: list[dict], annotations: list[dict]) -> dict[str, int]:
    with path.open("wb") as fh, CocoWriter(fh, info=INFO, categories=CATEGORIES) as writer:
        for image in images:
            writer.add_image(image)
        for annotation in annotations:
            writer.add_annotation(annotation)
    return writer.close()


def test_output_loads_in_pycocotools_with_every_mask_intact(tmp_path: Path) -> None:
    masks = _random_masks(5, 40, 60)
    images = [{"id": i, "width": 60, "height": 40, "file_name": f"{i}.jpg"} for i in (1, 2)]
    annotations = [_annotation(10 + n, 1 + n % 2, m) for n, m in enumerate(masks)]
    counts = _write(tmp_path / "coco.json", images, annotations)

    assert counts == {"images": 2, "annotations": 5}
    coco = COCO(str(tmp_path / "coco.json"))
    assert sorted(coco.getImgIds()) == [1, 2]
    assert len(coco.getAnnIds(imgIds=[1])) == 3
    assert coco.loadCats([1])[0]["name"] == "object"
    for n, mask in enumerate(masks):
        ann = coco.loadAnns([10 + n])[0]
        assert ann["iscrowd"] == 0
        assert ann["predicted_iou"] == pytest.approx(0.93)
        np.testing.assert_array_equal(coco.annToMask(ann), mask)


def test_evaluating_the_output_against_itself_gives_ap_one(tmp_path: Path) -> None:
    masks = _random_masks(12, 64, 64, seed=3)
    images = [{"id": i, "width": 64, "height": 64, "file_name": f"{i}.png"} for i in range(3)]
    annotations = [_annotation(n + 1, n % 3, m) for n, m in enumerate(masks)]
    _write(tmp_path / "gt.json", images, annotations)

    gt = COCO(str(tmp_path / "gt.json"))
    detections = gt.loadRes([{**a, "score": 1.0} for a in gt.loadAnns(gt.getAnnIds())])
    evaluation = COCOeval(gt, detections, iouType="segm")
    evaluation.params.areaRng = [[0, 1e10]]
    evaluation.params.areaRngLbl = ["all"]
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_an_image_after_an_annotation_raises_value_error() -> None:
    writer = CocoWriter(io.BytesIO(), info=INFO, categories=CATEGORIES)
    writer.add_image({"id": 1, "width": 4, "height": 4, "file_name": "a.jpg"})
    writer.add_annotation(_annotation(1, 1, np.ones((4, 4), dtype=np.uint8)))
    with pytest.raises(ValueError, match="before the first annotation"):
        writer.add_image({"id": 2, "width": 4, "height": 4, "file_name": "b.jpg"})


@pytest.mark.parametrize("n_images", [0, 2])
def test_output_without_annotations_is_valid_json_and_loads(tmp_path: Path, n_images: int) -> None:
    images = [{"id": i, "width": 8, "height": 8, "file_name": f"{i}.jpg"} for i in range(n_images)]
    counts = _write(tmp_path / "empty.json", images, [])
    document = json.loads((tmp_path / "empty.json").read_bytes())
    assert counts == {"images": n_images, "annotations": 0}
    assert document["annotations"] == []
    assert len(document["images"]) == n_images
    assert document["info"] == INFO
    assert len(COCO(str(tmp_path / "empty.json")).getImgIds()) == n_images


def test_missing_required_annotation_field_raises_value_error() -> None:
    writer = CocoWriter(io.BytesIO(), info=INFO, categories=CATEGORIES)
    record = _annotation(7, 1, np.ones((4, 4), dtype=np.uint8))
    del record["bbox"]
    with pytest.raises(ValueError, match=r"annotation 7: missing required field.*bbox"):
        writer.add_annotation(record)


def test_uncompressed_counts_are_refused() -> None:
    writer = CocoWriter(io.BytesIO(), info=INFO, categories=CATEGORIES)
    record = _annotation(8, 1, np.ones((4, 4), dtype=np.uint8))
    record["segmentation"] = {"size": [4, 4], "counts": [0, 16]}
    with pytest.raises(ValueError, match="compressed string"):
        writer.add_annotation(record)


def test_nan_score_is_refused_instead_of_writing_invalid_json() -> None:
    writer = CocoWriter(io.BytesIO(), info=INFO, categories=CATEGORIES)
    record = _annotation(9, 1, np.ones((4, 4), dtype=np.uint8))
    record["predicted_iou"] = float("nan")
    with pytest.raises(ValueError, match="JSON compliant"):
        writer.add_annotation(record)


def test_an_error_inside_the_block_leaves_the_document_unterminated() -> None:
    out = io.BytesIO()

    def interrupted_export() -> None:
        with CocoWriter(out, info=INFO, categories=CATEGORIES) as writer:
            writer.add_image({"id": 1, "width": 4, "height": 4, "file_name": "a.jpg"})
            raise RuntimeError("export interrupted")

    with pytest.raises(RuntimeError):
        interrupted_export()
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.getvalue())


def _peak_while_writing(path: Path, count: int) -> int:
    """Peak traced allocation while ``count`` annotations stream to ``path``."""
    rle = _rle(_random_masks(1, 32, 32)[0])
    gc.collect()
    with path.open("wb") as fh:
        tracemalloc.start()
        try:
            writer = CocoWriter(fh, info=INFO, categories=CATEGORIES)
            writer.add_image({"id": 1, "width": 32, "height": 32, "file_name": "a.jpg"})
            for n in range(count):
                writer.add_annotation(
                    {"id": n, "image_id": 1, "category_id": 1, "segmentation": rle,
                     "area": 10.0, "bbox": [1.0, 2.0, 3.0, 4.0], "predicted_iou": 0.9}
                )  # fmt: skip
            assert writer.close()["annotations"] == count
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def test_memory_stays_flat_however_many_annotations_are_written(tmp_path: Path) -> None:
    # tracemalloc slows allocation ~10x, so the sizes stay moderate to keep the suite fast.
    small = _peak_while_writing(tmp_path / "small.json", 5_000)
    large = _peak_while_writing(tmp_path / "large.json", 60_000)
    assert (tmp_path / "large.json").stat().st_size > 6_000_000
    assert large < 512 * 1024  # far below the size of the output
    assert large < small + 64 * 1024  # 12x the records, (almost) no more memory
    document = json.loads((tmp_path / "large.json").read_bytes())
    assert len(document["annotations"]) == 60_000
