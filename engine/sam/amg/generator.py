"""`SamAutomaticMaskGenerator`: masks for a whole image from a grid of point prompts.

Same parameters, defaults, filters and records as the official generator; faster because
- the decoder runs on the cached embedding and returns low-resolution logits; only prompts with
  a candidate above `pred_iou_thresh` (a score that does not depend on the mask) are upscaled;
- the stability counts and the final masks are computed without upsampling every pixel
  (tiled.py): a tile of the original-size logits whose low-res support lies entirely above or
  below a threshold is decided from the low-res logits, only the others are upsampled (the same
  bilinear weights as `postprocess_masks`; same counts up to pixels within float rounding of a
  threshold);
- candidates are kept as box-cut bool arrays, and RLEs / full masks are built only for records
  that survive NMS.
"""

from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.sam.amg.boxes import box_nms, masks_to_boxes, near_crop_edge, xyxy_to_xywh
from engine.sam.amg.grids import build_all_layer_point_grids, generate_crop_boxes
from engine.sam.amg.proposals import Proposals, cut_to_box
from engine.sam.amg.regions import remove_small_regions
from engine.sam.amg.rle import encode_mask
from engine.sam.amg.settings import check_parameters
from engine.sam.amg.tiled import TiledThresholds
from engine.sam.modeling import Sam
from engine.sam.modeling.prompt_batch import PromptBatchDecoder
from engine.sam.predictor import SamPredictor
from engine.sam.prompts import as_rgb_uint8

# Full-resolution pixels filtered at once (4 MiB of bool masks, about 13 masks of 640 x 480): the
# filter is memory-bound, and blocks under glibc's 32 MiB mmap threshold are reused from its heap
# instead of being page-faulted in afresh (half the filter's time at 1 << 26). Masks are
# independent, so the chunk size does not change any result.
FILTER_PIXELS = 1 << 22


class SamAutomaticMaskGenerator:
    """Prompt SAM with a point grid (per crop layer), filter, de-duplicate, encode.

    Parameters are the official ones (see the official docstring; DESIGN.md lists defaults)
    plus `max_mask_area_fraction`: drop records whose mask covers at least that fraction of
    the image (SA-1B used 0.95; None, the default, keeps every record).
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        max_mask_area_fraction: float | None = None,
    ) -> None:
        params = dict(locals())
        del params["self"], params["model"]
        check_parameters(params)
        if points_per_side is not None:
            self.point_grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            assert point_grids is not None  # check_parameters
            self.point_grids = [np.asarray(grid, dtype=np.float64) for grid in point_grids]
        self.predictor = SamPredictor(model)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.max_mask_area_fraction = max_mask_area_fraction
        self._batch_decoder: PromptBatchDecoder | None = None
        self._tiles: TiledThresholds | None = None

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Records for an H x W x 3 uint8 RGB image (grayscale / RGBA converted).

        Each record: segmentation (H x W bool, or an RLE dict per `output_mode`), area (int),
        bbox [x, y, w, h] (w = x_max - x_min), predicted_iou, point_coords [[x, y]],
        stability_score, crop_box [x, y, w, h].
        """
        rgb = as_rgb_uint8(image, "RGB")
        height, width = rgb.shape[:2]
        proposals = self._generate_proposals(rgb)
        if self.min_mask_region_area > 0:
            proposals = self._clean_small_regions(proposals, height, width)
        records = []
        for i in range(len(proposals)):
            mask = proposals.full_mask(i, height, width)
            area = int(mask.sum())
            if (
                self.max_mask_area_fraction is not None
                and area >= self.max_mask_area_fraction * height * width
            ):
                continue
            records.append(
                {
                    "segmentation": encode_mask(mask, self.output_mode),
                    "area": area,
                    "bbox": xyxy_to_xywh(proposals.boxes[i]),
                    "predicted_iou": float(proposals.iou[i]),
                    "point_coords": [[float(v) for v in proposals.points[i]]],
                    "stability_score": float(proposals.stability[i]),
                    "crop_box": xyxy_to_xywh(proposals.crop_boxes[i]),
                }
            )
        return records

    def _generate_proposals(self, image: np.ndarray) -> Proposals:
        """Every crop's de-duplicated candidates; across crops smaller crops win."""
        crop_boxes, layers = generate_crop_boxes(
            image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio
        )
        parts = [
            self._crop_proposals(image, box, layer)
            for box, layer in zip(crop_boxes, layers, strict=True)
        ]
        proposals = Proposals.concat(parts)
        if len(crop_boxes) > 1 and len(proposals):
            crops = proposals.crop_boxes
            areas = ((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1])).astype(np.float32)
            scores = np.float32(1.0) / areas
            proposals = proposals.take(box_nms(proposals.boxes, scores, self.crop_nms_thresh))
        return proposals

    def _crop_proposals(self, image: np.ndarray, crop_box: list[int], layer: int) -> Proposals:
        """Candidates of one crop, NMS'd by predicted IoU, moved to the image frame."""
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_size = (int(crop.shape[0]), int(crop.shape[1]))
        self.predictor.set_image(crop)
        model = self.predictor.model
        _, no_mask = model.prompt_encoder(points=None, boxes=None, masks=None)
        self._batch_decoder = PromptBatchDecoder(
            model.mask_decoder,
            self.predictor.get_image_embedding().float() + no_mask,
            model.prompt_encoder.get_dense_pe(),
        )
        low_side = 4 * self._batch_decoder.height, 4 * self._batch_decoder.width
        self._tiles = TiledThresholds(
            low_side,
            model.img_size,
            self.predictor.input_size,
            self.predictor.original_size,
            self.predictor.device,
        )
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
        image_box = [0, 0, image.shape[1], image.shape[0]]
        parts = [
            self._batch_proposals(
                points[start : start + self.points_per_batch], crop_box, image_box
            )
            for start in range(0, len(points), self.points_per_batch)
        ]
        self.predictor.reset_image()
        self._batch_decoder = None
        self._tiles = None
        proposals = Proposals.concat(parts)
        proposals = proposals.take(box_nms(proposals.boxes, proposals.iou, self.box_nms_thresh))
        proposals.crop_boxes = np.tile(np.asarray(crop_box, dtype=np.int64), (len(proposals), 1))
        return proposals.shifted(x0, y0)

    def _decode(self, points: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """B x 2 crop-frame points -> the multimask candidates worth upsampling.

        Returns low-res logits K x 256 x 256, their iou K and their index K into the 3B
        point-major candidates. The IoU head reads only the decoder's tokens, so a prompt whose
        three scores are all at or under `pred_iou_thresh` is never upscaled: those masks would
        be dropped by the IoU filter anyway.
        """
        predictor, model = self.predictor, self.predictor.model
        coords = predictor.transform.apply_coords(points, predictor.original_size)
        coords_t = torch.as_tensor(coords, device=predictor.device)[:, None, :]
        labels = torch.ones((coords_t.shape[0], 1), dtype=torch.int, device=predictor.device)
        sparse, _ = model.prompt_encoder(points=(coords_t, labels), boxes=None, masks=None)
        assert self._batch_decoder is not None  # built by _crop_proposals
        decoded = self._batch_decoder.tokens(sparse)
        iou = decoded.iou[:, 1:].float()  # B x 3 multimask candidates
        rows = torch.arange(iou.shape[0], device=iou.device)
        if self.pred_iou_thresh > 0.0:
            rows = rows[(iou > self.pred_iou_thresh).any(dim=1)]
        low_res = self._batch_decoder.masks(decoded, rows, slice(1, None)).float()
        per_point = iou.shape[1]
        index = (rows[:, None] * per_point + torch.arange(per_point, device=rows.device)).flatten()
        return low_res.flatten(0, 1), iou.flatten()[index], index

    def _batch_proposals(
        self, points: np.ndarray, crop_box: list[int], image_box: list[int]
    ) -> Proposals:
        """Decode a batch of points, keep masks passing the IoU, stability and edge filters."""
        low_res, iou, index = self._decode(points)
        keep = torch.arange(low_res.shape[0], device=low_res.device)
        if self.pred_iou_thresh > 0.0:
            keep = keep[iou > self.pred_iou_thresh]
        height, width = self.predictor.original_size
        chunk = max(1, FILTER_PIXELS // (height * width))
        parts = [
            self._filter_full_resolution(low_res, iou, keep[i : i + chunk], crop_box, image_box)
            for i in range(0, len(keep), chunk)
        ]
        kept, stability, boxes, cuts = _join(parts, low_res.device)
        candidates = self.predictor.model.mask_decoder.num_multimask_outputs
        point_of = (index[kept] // candidates).cpu().numpy()
        return Proposals(
            boxes=boxes,
            iou=iou[kept].cpu().numpy(),
            stability=stability,
            points=points[point_of],
            crop_boxes=np.zeros((len(cuts), 4), dtype=np.int64),
            cuts=cuts,
        )

    def _filter_full_resolution(
        self,
        low_res: Tensor,
        iou: Tensor,
        index: Tensor,
        crop_box: list[int],
        image_box: list[int],
    ) -> tuple[Tensor, np.ndarray, np.ndarray, list[np.ndarray]]:
        """Stability and crop-edge filters on the upsampled masks at `index` (tiled.py: only
        tiles whose value is not decided by the low-res logits are upsampled).

        Returns the kept indices, their stability N float32, boxes N x 4 and box-cut masks.
        """
        assert self._tiles is not None  # built by _crop_proposals
        threshold = self.predictor.model.mask_threshold
        offset = self.stability_score_offset
        levels = [threshold + offset, threshold - offset, threshold]
        tiles = self._tiles.count(low_res[index], levels, threshold)
        inner, outer = tiles.counts[:, 0], tiles.counts[:, 1]
        stability = inner.float() / outer.float()
        keep = torch.ones_like(stability, dtype=torch.bool)
        if self.stability_score_thresh > 0.0:
            keep = stability >= self.stability_score_thresh
        masks = self._tiles.masks(tiles, torch.nonzero(keep).flatten(), threshold)
        boxes = masks_to_boxes(masks)
        at_edge = near_crop_edge(boxes, crop_box, image_box)
        masks, boxes = masks[~at_edge], boxes[~at_edge]
        selected = torch.nonzero(keep).flatten()[~at_edge]
        boxes_np = boxes.cpu().numpy()
        masks_np = masks.cpu().numpy()
        cuts = [cut_to_box(mask, box) for mask, box in zip(masks_np, boxes_np, strict=True)]
        return index[selected], stability[selected].cpu().numpy(), boxes_np, cuts

    def _clean_small_regions(self, proposals: Proposals, height: int, width: int) -> Proposals:
        """Fill holes, then remove islands, under `min_mask_region_area`; NMS again preferring
        masks that needed no change."""
        if len(proposals) == 0:
            return proposals
        cleaned = Proposals(
            boxes=proposals.boxes.copy(),
            iou=proposals.iou,
            stability=proposals.stability,
            points=proposals.points,
            crop_boxes=proposals.crop_boxes,
            cuts=list(proposals.cuts),
        )
        unchanged = np.ones(len(proposals), dtype=np.float32)
        for i in range(len(proposals)):
            mask = proposals.full_mask(i, height, width)
            mask, holes_changed = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, islands_changed = remove_small_regions(mask, self.min_mask_region_area, "islands")
            if holes_changed or islands_changed:
                unchanged[i] = 0.0
                box = masks_to_boxes(torch.from_numpy(mask)[None])[0].numpy()
                cleaned.boxes[i] = box
                cleaned.cuts[i] = cut_to_box(mask, box)
        threshold = max(self.box_nms_thresh, self.crop_nms_thresh)
        return cleaned.take(box_nms(cleaned.boxes, unchanged, threshold))


def _join(
    parts: list[tuple[Tensor, np.ndarray, np.ndarray, list[np.ndarray]]], device: torch.device
) -> tuple[Tensor, np.ndarray, np.ndarray, list[np.ndarray]]:
    if not parts:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, np.zeros(0, np.float32), np.zeros((0, 4), np.int64), []
    return (
        torch.cat([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        [cut for p in parts for cut in p[3]],
    )
