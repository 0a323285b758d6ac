"""Streaming COCO writer: one JSON document written record by record, memory flat.

The document is laid out as ``{"info", "licenses", "categories", "images": [...],
"annotations": [...]}``; all images come first so the writer never holds more than one record.
Segmentations are compressed COCO RLE with ``iscrowd: 0``, which pycocotools' ``COCO`` and
``COCOeval`` accept.
"""

from types import TracebackType
from typing import Any, BinaryIO, Literal, Self

from storage.formats._json import dumps, require, rle

IMAGE_REQUIRED = ("id", "width", "height", "file_name")
ANNOTATION_REQUIRED = ("id", "image_id", "category_id", "segmentation", "area", "bbox")


class CocoWriter:
    """Write a COCO dataset to ``fileobj`` (binary, opened for writing) while records arrive."""

    def __init__(
        self,
        fileobj: BinaryIO,
        *,
        info: dict[str, Any],
        categories: list[dict[str, Any]],
        licenses: list[dict[str, Any]] | None = None,
    ) -> None:
        for category in categories:
            require(category, ("id", "name"), f"category {category!r}")
        self._out = fileobj
        self._section: Literal["start", "images", "annotations", "closed"] = "start"
        self._images = 0
        self._annotations = 0
        self._first_in_section = True
        head = (
            f'{{"info":{dumps(info)},"licenses":{dumps(licenses or [])},'
            f'"categories":{dumps(categories)},"images":['
        )
        self._write(head)
        self._section = "images"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On error the document is left unterminated on purpose: a truncated export must not
        # parse as a smaller, valid dataset.
        if exc_type is None and self._section != "closed":
            self.close()

    def _write(self, text: str) -> None:
        self._out.write(text.encode("utf-8"))

    def _write_item(self, text: str) -> None:
        self._write(text if self._first_in_section else "," + text)
        self._first_in_section = False

    def add_image(self, record: dict[str, Any]) -> None:
        """Append an image record (id, width, height, file_name, any extra COCO keys)."""
        if self._section != "images":
            raise ValueError(
                f"image {record.get('id')!r} added after annotations (or after close): "
                "all images must be written before the first annotation"
            )
        require(record, IMAGE_REQUIRED, f"image {record.get('id')!r}")
        self._write_item(dumps(record))
        self._images += 1

    def add_annotation(self, record: dict[str, Any]) -> None:
        """Append an annotation; ``iscrowd`` defaults to 0 (RLE masks here are never crowds)."""
        if self._section == "closed":
            raise ValueError("annotation added after close()")
        owner = f"annotation {record.get('id')!r}"
        require(record, ANNOTATION_REQUIRED, owner)
        bbox = record["bbox"]
        if len(bbox) != 4:
            raise ValueError(f"{owner}: bbox must be [x, y, w, h], got {bbox!r}")
        if self._section == "images":
            self._write('],"annotations":[')
            self._section = "annotations"
            self._first_in_section = True
        out = {**record, "segmentation": rle(record["segmentation"], owner)}
        out.setdefault("iscrowd", 0)
        self._write_item(dumps(out))
        self._annotations += 1

    def close(self) -> dict[str, int]:
        """Terminate the document (the file object stays open) and return the counts."""
        if self._section == "images":
            self._write('],"annotations":[')
        if self._section != "closed":
            self._write("]}\n")
            self._section = "closed"
        return {"images": self._images, "annotations": self._annotations}
