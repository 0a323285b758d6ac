"""How good are prefilled masks? Precision and recall of proposed masks against ground truth.

Used by ``bench/prefill_precision.py`` (synthetic scenes with exact instance masks) and by
:func:`annotation.services.semi_automatic.prefill_calibrate` (a project's frozen validation
split against its accepted masks). The matching here is plain numpy + pycocotools and touches
no Django, so the bench can use it without a database.

Matching is one-to-one and greedy by IoU (highest pair first), as detection benchmarks do: a
duplicate of an already matched object counts as a false positive, so precision measures what an
annotator would have to reject, and recall what they would still have to add.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

IOU_THRESHOLDS: tuple[float, ...] = (0.5, 0.75)


@dataclass
class MatchCounts:
    """Running totals over images: predictions, ground-truth objects, matches per threshold."""

    thresholds: tuple[float, ...] = IOU_THRESHOLDS
    predicted: int = 0
    ground_truth: int = 0
    images: int = 0

    def __post_init__(self) -> None:
        self.matched: dict[float, int] = {t: 0 for t in self.thresholds}
        self.matched_iou_sum: float = 0.0  # IoU of the matches at the lowest threshold

    def add(self, iou: np.ndarray) -> None:
        """Add one image: ``iou`` is P x G (predictions x ground-truth objects)."""
        predicted, truth = iou.shape
        self.images += 1
        self.predicted += predicted
        self.ground_truth += truth
        pairs = greedy_matches(iou)
        for threshold in self.thresholds:
            self.matched[threshold] += sum(1 for value in pairs if value >= threshold)
        lowest = min(self.thresholds)
        self.matched_iou_sum += sum(value for value in pairs if value >= lowest)

    def precision(self, threshold: float) -> float | None:
        return self.matched[threshold] / self.predicted if self.predicted else None

    def recall(self, threshold: float) -> float | None:
        return self.matched[threshold] / self.ground_truth if self.ground_truth else None

    def summary(self) -> dict[str, Any]:
        """Plain JSON: counts, precision@t and recall@t per threshold, masks per image."""
        out: dict[str, Any] = {
            "images": self.images,
            "predicted": self.predicted,
            "ground_truth": self.ground_truth,
            "masks_per_image": self.predicted / self.images if self.images else None,
        }
        for threshold in self.thresholds:
            out[f"precision@{threshold:g}"] = self.precision(threshold)
            out[f"recall@{threshold:g}"] = self.recall(threshold)
        lowest = min(self.thresholds)
        matched = self.matched[lowest]
        out[f"mean_iou_of_matches@{lowest:g}"] = self.matched_iou_sum / matched if matched else None
        return out


def greedy_matches(iou: np.ndarray) -> list[float]:
    """IoUs of a one-to-one matching of rows to columns, taking the highest pair first
    (pairs with IoU 0 are never matched). ``iou``: P x G."""
    if iou.size == 0:
        return []
    work = np.array(iou, dtype=np.float64, copy=True)
    values: list[float] = []
    for _ in range(min(work.shape)):
        flat = int(np.argmax(work))
        row, col = divmod(flat, work.shape[1])
        best = float(work[row, col])
        if best <= 0.0:
            break
        values.append(best)
        work[row, :] = -1.0
        work[:, col] = -1.0
    return values


def rle_iou(predicted: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]]) -> np.ndarray:
    """P x G IoU of COCO RLEs (``counts`` str or bytes) of one image size."""
    if not predicted or not truth:
        return np.zeros((len(predicted), len(truth)), dtype=np.float64)
    pred = [_bytes_counts(rle) for rle in predicted]
    gt = [_bytes_counts(rle) for rle in truth]
    return np.asarray(mask_utils.iou(pred, gt, [0] * len(gt)), dtype=np.float64).reshape(
        len(pred), len(gt)
    )


def _bytes_counts(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }


def binary_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """An H x W bool mask as compressed COCO RLE with str counts."""
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}
