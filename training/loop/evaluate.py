"""Interactive-segmentation evaluation with the SAM paper's protocol (§7.1).

Every non-empty ground-truth mask is segmented by simulated clicks (``clicks.next_click``):
the first at the interior point farthest from the mask's boundary, decoded with three
candidates of which the one with the highest predicted IoU is kept; every later one at the
deepest point of the error region, decoded with all points so far plus the previous chosen
low-res logits as the mask prompt and a single output. A mask is clicked until it has had
``max(POINTS)`` clicks and has reached ``target_iou`` (or ``max_clicks``), so every reported
``miou@k`` is a measured value. Separately, each mask is decoded from its tight box alone.

Masks are decoded at the image's original resolution exactly as `SamPredictor.predict_torch`
does (the same prompt transforms, decoder call and upsampling, through `upscale_masks`, which is
bit-identical to `Sam.postprocess_masks`), and all masks of an image advance together: one
batched decoder call per click. Nothing is random.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from engine.sam.embedding import ImageEmbedding
from engine.sam.modeling import Sam
from engine.sam.modeling.mask_decoder import defer_shuffle_on
from engine.sam.predictor import SamPredictor, upscale_masks
from training.loop.clicks import next_click
from training.loop.data import TrainSample, check_sample

__all__ = ["POINTS", "EvalMetrics", "evaluate", "next_click"]

POINTS: tuple[int, ...] = (1, 2, 3, 5, 9)
# Masks upsampled to the original resolution per batch: bounds the float intermediates
# (e.g. 8 x 1024 x 1024 x 4 bytes before the crop) on images with many masks.
_UPSCALE_BATCH = 8


@dataclass(frozen=True)
class EvalMetrics:
    """miou: points -> mean IoU over masks after that many clicks (keys: POINTS);
    miou_box: mean IoU from the tight box alone; clicks_to_target: mean clicks until IoU >=
    target_iou, a mask that never gets there counting max_clicks; masks / images: how many
    were evaluated (empty masks and images without masks are not).
    """

    miou: dict[int, float]
    miou_box: float
    clicks_to_target: float
    target_iou: float
    max_clicks: int
    masks: int
    images: int

    def to_dict(self) -> dict[str, float | int]:
        """{"miou@1": …, "miou@9": …, "miou_box": …, "clicks_to_0.9": …, "masks", "images"}."""
        data: dict[str, float | int] = {f"miou@{k}": v for k, v in sorted(self.miou.items())}
        data["miou_box"] = self.miou_box
        data[f"clicks_to_{self.target_iou:g}"] = self.clicks_to_target
        data["masks"] = self.masks
        data["images"] = self.images
        return data


@dataclass(frozen=True)
class _ImageResult:
    """Per mask of one image: ious N x rounds (IoU after 1, 2, … clicks; NaN once stopped),
    box_iou N, clicks N (clicks to the target, max_clicks when not reached).
    """

    ious: NDArray[np.float64]
    box_iou: NDArray[np.float64]
    clicks: NDArray[np.int64]


def _check_args(samples: Sequence[TrainSample], max_clicks: int, target_iou: float) -> None:
    if len(samples) == 0:
        raise ValueError("no samples to evaluate")
    if isinstance(max_clicks, bool) or not isinstance(max_clicks, int) or max_clicks < 1:
        raise ValueError(f"max_clicks must be a positive integer, got {max_clicks!r}")
    if not 0.0 < target_iou <= 1.0:
        raise ValueError(f"target_iou must be in (0, 1], got {target_iou!r}")
    for sample in samples:
        check_sample(sample)


def _iou(predicted: Tensor, gt: Tensor) -> Tensor:
    """B x H x W bool twice -> B float64 IoU (gt is never empty here)."""
    inter = (predicted & gt).flatten(1).sum(1)
    union = (predicted | gt).flatten(1).sum(1)
    return inter.double() / union.double()


class _Decoder:
    """The predictor's decode path for a batch of prompts on the current image."""

    def __init__(self, predictor: SamPredictor) -> None:
        self.predictor = predictor
        self.model = predictor.model

    def __call__(
        self,
        coords: NDArray[np.float64] | None,
        labels: NDArray[np.int64] | None,
        boxes: NDArray[np.float64] | None,
        mask_input: Tensor | None,
        multimask: bool,
    ) -> tuple[Tensor, Tensor]:
        """Prompts in original pixels: coords B x N x 2 (x, y), labels B x N, boxes B x 4
        xyxy, mask_input B x 1 x 256 x 256 -> (masks B x H x W bool of the candidate with the
        highest predicted IoU, its low-res logits B x 1 x 256 x 256).
        """
        predictor, model = self.predictor, self.model
        device, size = predictor.device, predictor.original_size
        points = boxes_t = None
        if coords is not None and labels is not None:
            moved = predictor.transform.apply_coords(coords, size)
            points = (
                torch.as_tensor(moved, dtype=torch.float, device=device),
                torch.as_tensor(labels, dtype=torch.int, device=device),
            )
        if boxes is not None:
            moved = predictor.transform.apply_boxes(boxes, size)
            boxes_t = torch.as_tensor(moved, dtype=torch.float, device=device)
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes_t, masks=mask_input)
        low_res, iou = model.mask_decoder(
            image_embeddings=predictor.get_image_embedding(),
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            deferred_shuffle=defer_shuffle_on(device),
        )
        best = iou.argmax(dim=1)
        chosen = low_res[torch.arange(low_res.shape[0], device=device), best][:, None]
        masks = [
            upscale_masks(part, predictor.input_size, size, model.img_size)[:, 0]
            > model.mask_threshold
            for part in chosen.split(_UPSCALE_BATCH)
        ]
        return torch.cat(masks), chosen


def _tight_boxes(gts: Sequence[NDArray[np.bool_]]) -> NDArray[np.float64]:
    """N x 4 xyxy through the extreme pixels of each (non-empty) mask, original pixels."""
    boxes = np.zeros((len(gts), 4), dtype=np.float64)
    for index, gt in enumerate(gts):
        rows = np.flatnonzero(gt.any(axis=1))
        cols = np.flatnonzero(gt.any(axis=0))
        boxes[index] = (cols[0], rows[0], cols[-1], rows[-1])
    return boxes


def _evaluate_image(
    decode: _Decoder,
    gts: list[NDArray[np.bool_]],
    *,
    max_clicks: int,
    target_iou: float,
) -> _ImageResult:
    """Click every mask of the current image; gts: N non-empty H x W bool masks."""
    count, device = len(gts), decode.predictor.device
    gt_t = torch.from_numpy(np.stack(gts)).to(device)
    box_masks, _ = decode(None, None, _tight_boxes(gts), None, multimask=False)
    box_iou = _iou(box_masks, gt_t).cpu().numpy()
    del box_masks

    rounds = max(max(POINTS), max_clicks)
    ious = np.full((count, rounds), np.nan)
    clicks = np.full(count, max_clicks, dtype=np.int64)
    reached = np.zeros(count, dtype=bool)
    # Row i holds mask i's clicks so far; only the rows of active masks are read.
    coords = np.zeros((count, rounds, 2), dtype=np.float64)
    labels = np.zeros((count, rounds), dtype=np.int64)
    predicted: list[NDArray[np.bool_] | None] = [None] * count
    logits: Tensor | None = None  # chosen low-res logits per mask, N x 1 x 256 x 256
    active = np.arange(count)
    for step in range(rounds):
        still = []
        for i in active:
            click = next_click(predicted[i], gts[i])
            if click is None:
                # A prediction equal to its gt leaves nothing to click: measured IoU 1 stays.
                ious[i, step:] = 1.0
                continue
            coords[i, step] = click[:2]
            labels[i, step] = int(click[2])
            still.append(i)
        active = np.array(still, dtype=np.int64)
        if active.size == 0:
            break
        rows = torch.from_numpy(active).to(device)
        first = step == 0
        masks, chosen = decode(
            coords[active, : step + 1],
            labels[active, : step + 1],
            None,
            None if first or logits is None else logits[rows],
            multimask=first,
        )
        iou = _iou(masks, gt_t[rows]).cpu().numpy()
        ious[active, step] = iou
        newly = ~reached[active] & (iou >= target_iou) & (step < max_clicks)
        clicks[active[newly]] = step + 1
        reached[active[newly]] = True
        if logits is None:
            logits = torch.zeros((count, *chosen.shape[1:]), device=device)
        logits[rows] = chosen
        for row, mask in zip(active, masks.cpu().numpy(), strict=True):
            predicted[row] = mask
        # A mask stops once every reported point count is measured and the target is reached
        # (or max_clicks is spent); carrying an IoU forward is never needed.
        measured = step + 1 >= max(POINTS)
        active = active[~(measured & (reached[active] | (step + 1 >= max_clicks)))]
        if active.size == 0:
            break
    return _ImageResult(ious=ious, box_iou=box_iou, clicks=clicks)


def evaluate(
    model: Sam,
    samples: Sequence[TrainSample],
    *,
    device: str | torch.device = "cpu",
    max_clicks: int = 20,
    target_iou: float = 0.9,
    embeddings: Mapping[str, Tensor | ImageEmbedding] | None = None,
) -> EvalMetrics:
    """Evaluate `model` on every non-empty mask of `samples` with the clicking protocol.

    samples: images H x W x 3 uint8 with H x W bool masks (zero-area masks are skipped);
    embeddings: optional image-encoder outputs (1 x C x 64 x 64, or `ImageEmbedding`) by
    sample key — an image without one is embedded once here. The model runs on `device` in
    eval mode and is given back on its own device and in its own mode. Raises ValueError for
    no samples, no non-empty mask, a bad max_clicks / target_iou or a malformed sample.
    """
    _check_args(samples, max_clicks, target_iou)
    work = [(sample, [m for m in sample.masks if m.any()]) for sample in samples]
    work = [(sample, gts) for sample, gts in work if gts]
    if not work:
        raise ValueError("the samples have no non-empty mask to evaluate")
    stored = embeddings or {}
    home, training = model.device, model.training
    model.to(device).eval()
    try:
        predictor = SamPredictor(model)
        decode = _Decoder(predictor)
        results = []
        with torch.inference_mode():
            for sample, gts in work:
                embedding = stored.get(sample.key)
                if embedding is None:
                    predictor.set_image(sample.image)
                elif isinstance(embedding, ImageEmbedding):
                    predictor.set_embedding(embedding)
                else:
                    predictor.set_embedding(embedding, original_size=sample.image.shape[:2])
                results.append(
                    _evaluate_image(decode, gts, max_clicks=max_clicks, target_iou=target_iou)
                )
    finally:
        model.to(home).train(training)
    ious = np.concatenate([result.ious for result in results])
    return EvalMetrics(
        miou={k: float(ious[:, k - 1].mean()) for k in POINTS},
        miou_box=float(np.concatenate([result.box_iou for result in results]).mean()),
        clicks_to_target=float(np.concatenate([result.clicks for result in results]).mean()),
        target_iou=float(target_iou),
        max_clicks=max_clicks,
        masks=int(ious.shape[0]),
        images=len(results),
    )
