"""Record serialisation shared by the writers: strict JSON, numpy scalars and arrays welcome."""

import json
from typing import Any


def _plain(value: Any) -> Any:
    # numpy scalars and arrays (and anything else array-like) know how to become plain Python;
    # checking for the method keeps numpy out of this package's imports.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, bytes):
        return value.decode("ascii")
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} as JSON")


def dumps(record: Any) -> str:
    """Compact JSON; NaN and infinity are refused because they are not valid JSON."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False, default=_plain)


def rle(segmentation: Any, owner: str) -> dict[str, Any]:
    """A compressed COCO RLE ``{"size": [h, w], "counts": str}``; raises ValueError otherwise."""
    if not isinstance(segmentation, dict) or set(segmentation) != {"size", "counts"}:
        raise ValueError(f"{owner}: segmentation must be a COCO RLE dict with size and counts")
    counts = segmentation["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, str):
        raise ValueError(f"{owner}: RLE counts must be a compressed string, got {type(counts)}")
    size = [int(v) for v in segmentation["size"]]
    if len(size) != 2:
        raise ValueError(f"{owner}: RLE size must be [height, width], got {segmentation['size']}")
    return {"size": size, "counts": counts}


def require(record: dict[str, Any], keys: tuple[str, ...], owner: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"{owner}: missing required field(s) {', '.join(missing)}")
