"""Candidate masks between the decoder and the records: scores, boxes and box-cut masks.

Each mask is kept as the bool array inside its box (`cuts`), which holds the full mask exactly
in a fraction of the memory, so thousands of candidates of a large image fit.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Proposals:
    """N candidates. boxes N x 4 int64 xyxy (inclusive maxima) in `frame` offset, iou N float32,
    stability N float32, points N x 2 float64 (x, y), crop_boxes N x 4 int64 xyxy, cuts: N
    bool arrays of shape (y1 - y0 + 1, x1 - x0 + 1) (1 x 1 False for an empty mask)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.int64))
    iou: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    stability: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.float64))
    crop_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.int64))
    cuts: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.cuts)

    def take(self, index: np.ndarray) -> "Proposals":
        """The candidates at `index` (int positions), in that order."""
        index = np.asarray(index, dtype=np.int64)
        return Proposals(
            boxes=self.boxes[index],
            iou=self.iou[index],
            stability=self.stability[index],
            points=self.points[index],
            crop_boxes=self.crop_boxes[index],
            cuts=[self.cuts[i] for i in index.tolist()],
        )

    def shifted(self, dx: int, dy: int) -> "Proposals":
        """The same candidates with boxes and points moved by (dx, dy) pixels."""
        return Proposals(
            boxes=self.boxes + np.array([dx, dy, dx, dy], dtype=np.int64),
            iou=self.iou,
            stability=self.stability,
            points=self.points + np.array([dx, dy]),
            crop_boxes=self.crop_boxes,
            cuts=self.cuts,
        )

    @staticmethod
    def concat(parts: list["Proposals"]) -> "Proposals":
        if not parts:
            return Proposals()
        return Proposals(
            boxes=np.concatenate([p.boxes for p in parts]),
            iou=np.concatenate([p.iou for p in parts]),
            stability=np.concatenate([p.stability for p in parts]),
            points=np.concatenate([p.points for p in parts]),
            crop_boxes=np.concatenate([p.crop_boxes for p in parts]),
            cuts=[cut for p in parts for cut in p.cuts],
        )

    def full_mask(self, i: int, height: int, width: int) -> np.ndarray:
        """Candidate i as an H x W bool mask (boxes must be in that image's frame)."""
        mask = np.zeros((height, width), dtype=bool)
        x0, y0 = int(self.boxes[i, 0]), int(self.boxes[i, 1])
        cut = self.cuts[i]
        mask[y0 : y0 + cut.shape[0], x0 : x0 + cut.shape[1]] = cut
        return mask


def cut_to_box(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The part of an H x W bool mask inside its inclusive xyxy box (a copy)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return mask[y0 : y1 + 1, x0 : x1 + 1].copy()
