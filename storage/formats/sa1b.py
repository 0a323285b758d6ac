"""Streaming SA-1B writer: one JSON per image (plus the image itself) in tar shards.

Each image becomes ``<stem>.json`` = ``{"image": {...}, "annotations": [...]}`` with exactly the
SA-1B fields; absent optional scores are written as null, never invented. A shard is closed after
``images_per_shard`` images and handed to ``on_shard_closed`` (which typically uploads and deletes
it), so disk and memory hold at most one shard and one image's annotations at a time.
"""

import io
import re
import tarfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from storage.formats._json import dumps, require, rle

SA1B_IMAGE_FIELDS = ("image_id", "width", "height", "file_name")
SA1B_ANNOTATION_FIELDS = (
    "id",
    "segmentation",
    "bbox",
    "area",
    "predicted_iou",
    "stability_score",
    "crop_box",
    "point_coords",
)
_ANNOTATION_REQUIRED = ("id", "segmentation", "bbox", "area")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_@=+,-][A-Za-z0-9._@=+,-]{0,254}$")


def safe_member_name(name: str) -> str:
    """Return ``name`` if it is a plain file name safe to put in a tar, else raise ValueError."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name.endswith("."):
        raise ValueError(
            f"unsafe file name {name!r}: use a plain base name of letters, digits and ._@=+,- "
            "(no directories, no leading dot)"
        )
    return name


class Sa1bShardWriter:
    """Write SA-1B style tar shards of ``images_per_shard`` images into ``out_dir``."""

    def __init__(
        self,
        out_dir: Path,
        *,
        images_per_shard: int,
        on_shard_closed: Callable[[Path], None] | None = None,
        shard_name: str = "sa_{:06d}.tar",
    ) -> None:
        if images_per_shard < 1:
            raise ValueError(f"images_per_shard must be at least 1, got {images_per_shard}")
        safe_member_name(shard_name.format(0))
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._per_shard = images_per_shard
        self._on_shard_closed = on_shard_closed
        self._shard_name = shard_name
        self._tar: tarfile.TarFile | None = None
        self._tar_path: Path | None = None
        self._names: set[str] = set()  # member names of the open shard only, so bounded
        self._in_shard = 0
        self._shards = 0
        self._images = 0
        self._annotations = 0
        self._closed = False
        self._mtime = int(time.time())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif self._tar is not None:
            # Release the file but do not publish a shard of a failed export.
            self._tar.close()
            self._tar = None

    def add_image(
        self,
        image: dict[str, Any],
        annotations: Iterable[dict[str, Any]],
        image_bytes: bytes | None = None,
    ) -> None:
        """Add one image's JSON (and its bytes when given) to the current shard."""
        if self._closed:
            raise ValueError("image added after close()")
        owner = f"image {image.get('image_id')!r}"
        require(image, SA1B_IMAGE_FIELDS, owner)
        file_name = safe_member_name(image["file_name"])
        json_name = (
            file_name.rsplit(".", 1)[0] + ".json" if "." in file_name else file_name + ".json"
        )
        if json_name == file_name:
            raise ValueError(f"{owner}: file name {file_name!r} collides with its JSON file")
        records = [_annotation(a, owner) for a in annotations]
        document = {"image": {k: image[k] for k in SA1B_IMAGE_FIELDS}, "annotations": records}
        payload = dumps(document).encode("utf-8")

        tar = self._current_shard()
        members = [json_name] if image_bytes is None else [file_name, json_name]
        clash = self._names.intersection(members)
        if clash:
            raise ValueError(f"{owner}: {sorted(clash)} already in shard {self._tar_path}")
        if image_bytes is not None:
            self._add_member(tar, file_name, image_bytes)
        self._add_member(tar, json_name, payload)
        self._names.update(members)
        self._images += 1
        self._annotations += len(records)
        self._in_shard += 1
        if self._in_shard >= self._per_shard:
            self._finish_shard()

    def close(self) -> dict[str, int]:
        """Close the last shard (handing it to the callback) and return the counts."""
        if not self._closed:
            self._finish_shard()
            self._closed = True
        return {"shards": self._shards, "images": self._images, "annotations": self._annotations}

    def _current_shard(self) -> tarfile.TarFile:
        if self._tar is None:
            self._tar_path = self.out_dir / self._shard_name.format(self._shards)
            # Stays open across add_image calls until the shard is full; closed in _finish_shard.
            self._tar = tarfile.open(self._tar_path, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
            self._names = set()
            self._in_shard = 0
        return self._tar

    def _add_member(self, tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = self._mtime
        tar.addfile(info, io.BytesIO(data))

    def _finish_shard(self) -> None:
        if self._tar is None or self._tar_path is None:
            return
        self._tar.close()
        self._tar = None
        self._shards += 1
        if self._on_shard_closed is not None:
            self._on_shard_closed(self._tar_path)


def _annotation(record: dict[str, Any], owner: str) -> dict[str, Any]:
    """The SA-1B annotation fields of ``record``; missing optional ones become null."""
    where = f"{owner} annotation {record.get('id')!r}"
    require(record, _ANNOTATION_REQUIRED, where)
    if len(record["bbox"]) != 4:
        raise ValueError(f"{where}: bbox must be [x, y, w, h], got {record['bbox']!r}")
    out = {key: record.get(key) for key in SA1B_ANNOTATION_FIELDS}
    out["segmentation"] = rle(record["segmentation"], where)
    return out
