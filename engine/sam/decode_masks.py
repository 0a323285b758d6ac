"""`SamPredictor.predict` for a server that answers COCO RLE: the same masks, upsampled only
near their boundaries when that is cheaper (engine.sam.boundary_masks).

`predict_masks` runs the prompt encoder and decoder, then plans the full-resolution masks from
the low-res logits; when the plan is refused (noise-like logits, a GPU, a torch build whose
arithmetic the exact emulation does not reproduce) it upsamples everything as `predict` does
(`SamPredictor.transposed_masks`). Either way `DecodedMasks.coco_rles` and
`DecodedMasks.masks` are exactly `predict`'s masks.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.sam.amg.rle import mask_to_coco_rle
from engine.sam.boundary_masks import BoundaryMasks, TilePlan
from engine.sam.predictor import SamPredictor

GEOMETRIES_KEPT = 16  # BoundaryMasks per process, one per image size being annotated

_geometries: "OrderedDict[tuple[int, ...], BoundaryMasks]" = OrderedDict()
_geometries_lock = threading.Lock()


def boundary_masks_for(
    low_size: tuple[int, int],
    image_size: int,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> BoundaryMasks:
    """The (cached) BoundaryMasks of one geometry: its tables take a few ms to build."""
    key = (*low_size, image_size, *input_size, *original_size)
    with _geometries_lock:
        found = _geometries.get(key)
        if found is not None:
            _geometries.move_to_end(key)
            return found
    built = BoundaryMasks(
        low_size=low_size, image_size=image_size, input_size=input_size, original_size=original_size
    )
    with _geometries_lock:
        _geometries[key] = built
        while len(_geometries) > GEOMETRIES_KEPT:
            _geometries.popitem(last=False)
    return built


@dataclass(frozen=True)
class DecodedMasks:
    """C candidates: scores, low-res logits and the masks, as a tile plan or transposed."""

    scores: np.ndarray  # C float32
    low_res: np.ndarray  # C x 256 x 256 float32
    plan: TilePlan | None  # when the boundary path was taken
    boundary: BoundaryMasks | None
    transposed: np.ndarray | None  # C x W x H bool (the H x W masks in Fortran order) otherwise

    def coco_rles(self) -> list[dict[str, Any]]:
        """Each candidate's COCO compressed RLE, counts as str."""
        if self.plan is not None and self.boundary is not None:
            return self.boundary.coco_rles(self.plan)
        assert self.transposed is not None
        # A bool array viewed as uint8 is pycocotools' input as is: no conversion, no copy.
        return [mask_to_coco_rle(mask_t.view(np.uint8).T) for mask_t in self.transposed]

    def masks(self) -> np.ndarray:
        """C x H x W bool (possibly a view)."""
        if self.plan is not None and self.boundary is not None:
            return self.boundary.masks(self.plan)
        assert self.transposed is not None
        return self.transposed.transpose(0, 2, 1)


@torch.no_grad()
def predict_masks(
    predictor: SamPredictor,
    *,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    mask_input: np.ndarray | None = None,
    multimask_output: bool = True,
) -> DecodedMasks:
    """`predictor.predict`'s masks (as DecodedMasks), scores and low-res logits."""
    low_res, iou = predictor.predict_low_res(
        point_coords, point_labels, box, mask_input, multimask_output
    )
    scores = iou[0].detach().float().cpu().numpy()
    low = low_res[0].detach().float()
    model = predictor.model
    if low.device.type == "cpu" and model.mask_threshold == 0.0:
        boundary = boundary_masks_for(
            (int(low.shape[-2]), int(low.shape[-1])),
            model.img_size,
            predictor.input_size,
            predictor.original_size,
        )
        plan = boundary.plan(low)
        if plan is not None:
            return DecodedMasks(scores, low.numpy(), plan, boundary, None)
    transposed = predictor.transposed_masks(low_res)
    return DecodedMasks(scores, low.cpu().numpy(), None, None, transposed)
