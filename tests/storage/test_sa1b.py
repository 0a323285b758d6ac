"""The SA-1B shard writer: shard rolling, exact per-image JSON, intact masks and image bytes."""

import gc
import json
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from storage.formats import SA1B_ANNOTATION_FIELDS, Sa1bShardWriter


def _mask(seed: int, height: int = 24, width: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((height, width)) > 0.6).astype(np.uint8)


def _record(ann_id: int, mask: np.ndarray, **scores: Any) -> dict[str, Any]:
    encoded = mask_utils.encode(np.asfortranarray(mask))
    return {
        "id": ann_id,
        "segmentation": {"size": list(encoded["size"]), "counts": encoded["counts"].decode()},
        "bbox": [float(v) for v in mask_utils.toBbox(encoded)],
        "area": int(mask_utils.area(encoded)),
        **scores,
    }


def _image(n: int) -> dict[str, Any]:
    return {"image_id": n, "width": 32, "height": 24, "file_name": f"sa_{n}.jpg"}


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_shards_roll_every_n_images_and_each_is_handed_to_the_callback(tmp_path: Path) -> None:
    seen: list[tuple[str, list[str]]] = []

    def on_closed(path: Path) -> None:
        seen.append((path.name, sorted(_members(path))))
        path.unlink()  # what an uploader does: the next shard must not need it

    with Sa1bShardWriter(tmp_path, images_per_shard=2, on_shard_closed=on_closed) as writer:
        for n in range(5):
            writer.add_image(_image(n), [_record(n * 10, _mask(n))], image_bytes=b"jpeg%d" % n)
    assert writer.close() == {"shards": 3, "images": 5, "annotations": 5}
    assert seen == [
        ("sa_000000.tar", ["sa_0.jpg", "sa_0.json", "sa_1.jpg", "sa_1.json"]),
        ("sa_000001.tar", ["sa_2.jpg", "sa_2.json", "sa_3.jpg", "sa_3.json"]),
        ("sa_000002.tar", ["sa_4.jpg", "sa_4.json"]),
    ]
    assert list(tmp_path.iterdir()) == []


def test_per_image_json_has_exactly_the_sa1b_fields_and_intact_masks(tmp_path: Path) -> None:
    masks = [_mask(1), _mask(2)]
    full = _record(
        1,
        masks[0],
        predicted_iou=np.float32(0.97),
        stability_score=0.96,
        crop_box=[0, 0, 32, 24],
        point_coords=[[4.5, 7.5]],
        source="automatic",  # not an SA-1B field: must not leak into the file
    )
    bare = _record(2, masks[1])
    with Sa1bShardWriter(tmp_path, images_per_shard=10) as writer:
        writer.add_image({**_image(7), "sha256": "ab"}, [full, bare], image_bytes=b"\xff\xd8bytes")

    members = _members(tmp_path / "sa_000000.tar")
    assert members["sa_7.jpg"] == b"\xff\xd8bytes"
    document = json.loads(members["sa_7.json"])
    assert set(document) == {"image", "annotations"}
    assert document["image"] == {"image_id": 7, "width": 32, "height": 24, "file_name": "sa_7.jpg"}
    first, second = document["annotations"]
    assert list(first) == list(SA1B_ANNOTATION_FIELDS)
    assert first["predicted_iou"] == pytest.approx(0.97)
    assert first["point_coords"] == [[4.5, 7.5]]
    assert (second["predicted_iou"], second["stability_score"]) == (None, None)
    assert (second["crop_box"], second["point_coords"]) == (None, None)
    for annotation, mask in zip(document["annotations"], masks, strict=True):
        assert isinstance(annotation["segmentation"]["counts"], str)
        np.testing.assert_array_equal(mask_utils.decode(annotation["segmentation"]), mask)


def test_without_image_bytes_only_the_json_is_written(tmp_path: Path) -> None:
    with Sa1bShardWriter(tmp_path, images_per_shard=3) as writer:
        writer.add_image(_image(1), [])
    assert list(_members(tmp_path / "sa_000000.tar")) == ["sa_1.json"]
    assert json.loads(_members(tmp_path / "sa_000000.tar")["sa_1.json"])["annotations"] == []


def test_no_images_means_no_shard_and_no_callback(tmp_path: Path) -> None:
    calls: list[Path] = []
    with Sa1bShardWriter(tmp_path / "out", images_per_shard=3, on_shard_closed=calls.append) as w:
        pass
    assert w.close() == {"shards": 0, "images": 0, "annotations": 0}
    assert calls == []
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "file_name",
    ["../evil.jpg", "a/b.jpg", "/abs.jpg", "x\\y.jpg", ".hidden", "", "a\x00.jpg", ".."],
)
def test_unsafe_file_names_are_refused_before_anything_is_written(
    tmp_path: Path, file_name: str
) -> None:
    writer = Sa1bShardWriter(tmp_path, images_per_shard=2)
    with pytest.raises(ValueError, match="unsafe file name"):
        writer.add_image({**_image(1), "file_name": file_name}, [], image_bytes=b"x")
    assert writer.close()["images"] == 0
    assert list(tmp_path.iterdir()) == []


def test_a_repeated_file_name_in_one_shard_is_refused(tmp_path: Path) -> None:
    writer = Sa1bShardWriter(tmp_path, images_per_shard=5)
    writer.add_image(_image(1), [], image_bytes=b"one")
    with pytest.raises(ValueError, match="already in shard"):
        writer.add_image(_image(1), [], image_bytes=b"two")
    writer.close()
    assert _members(tmp_path / "sa_000000.tar")["sa_1.jpg"] == b"one"


def test_a_missing_required_annotation_field_is_refused(tmp_path: Path) -> None:
    record = _record(3, _mask(3))
    del record["area"]
    with pytest.raises(ValueError, match=r"annotation 3: missing required field.*area"):
        Sa1bShardWriter(tmp_path, images_per_shard=1).add_image(_image(1), [record])


def test_memory_stays_flat_across_many_images(tmp_path: Path) -> None:
    record = _record(1, _mask(1))
    gc.collect()
    tracemalloc.start()
    try:
        with Sa1bShardWriter(
            tmp_path, images_per_shard=500, on_shard_closed=lambda p: p.unlink()
        ) as writer:
            for n in range(4_000):
                writer.add_image(_image(n), [record] * 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.close() == {"shards": 8, "images": 4_000, "annotations": 40_000}
    assert peak < 512 * 1024  # the shard names of one shard plus one image's JSON
