"""Prefill calibration: precision and recall of automatically proposed masks against ground truth.

The semi-automatic stage prefills each image with the deployed model's *confident* masks (the
automatic generator with strict thresholds) and annotators add what is missing. A prefilled mask
that is wrong costs a rejection, one that is missing costs an annotation, so the thresholds trade
precision against recall. This bench measures both on seeded synthetic scenes with exact instance
masks (``training/loop/scenes.py``) for the seed model (``training/seed``, trained on domain A):

- for every (pred_iou_thresh, stability_score_thresh) of a grid: masks per image, precision and
  recall at mask IoU >= 0.5 and >= 0.75 (one-to-one greedy matching,
  ``annotation/services/prefill_calibration.py``);
- the reference measured in the same run: the official generator thresholds (0.88 / 0.95); the
  chosen setting is reported as ratios against it;
- the chosen setting (rule below) run end to end with every other ``PREFILL_DEFAULTS`` setting
  (small-region cleanup included), to give the figure the product ships with.

How the grid is evaluated: the generator runs once per scene with the grid's lowest thresholds
and NMS switched off (``box_nms_thresh=1.0``), recording every candidate; each grid point then
filters those candidates (``predicted_iou > t``, ``stability >= s``, as the generator does) and
applies the generator's own ``box_nms`` at 0.7. With one crop layer and no region cleanup that is
exactly the generator's pipeline (``--check`` reruns the generator at one grid point and compares
the mask count), at the cost of one decoder pass per scene instead of one per grid point.

Choice rule: the grid point with the highest recall@0.5 among those with precision@0.75 >= the
target (``--target``, default 0.9: nine prefilled masks in ten need no touch-up); when none
reaches it, the point with the highest precision@0.75.

    PYTHONPATH=. .venv/bin/python bench/prefill_precision.py --scenes 8
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotation.services.prefill_calibration import (  # noqa: E402
    IOU_THRESHOLDS,
    MatchCounts,
    binary_to_rle,
    rle_iou,
)

SEED_CHECKPOINT = REPO / "training" / "seed" / "seed_vit_tiny_domain_a.pth"
# The seed model saw domain-A scenes with seeds 0..399; these are held out.
FIRST_SEED = 10_000
IOU_GRID = (0.50, 0.60, 0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92)
STABILITY_GRID = (0.80, 0.85, 0.90, 0.92, 0.95, 0.97)
REFERENCE = (0.88, 0.95)  # the official generator defaults
NMS_THRESH = 0.7
MAX_AREA_FRACTION = 0.95


def _xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def candidates_for(generator: Any, image: np.ndarray) -> list[dict[str, Any]]:
    """Every candidate passing the grid's lowest thresholds, before NMS."""
    return list(generator.generate(image))


def select(
    records: list[dict[str, Any]], *, iou_thresh: float, stability_thresh: float, area: int
) -> list[dict[str, Any]]:
    """The generator's filters, then its NMS and the large-mask drop, on stored candidates."""
    from engine.sam.amg.boxes import box_nms

    kept = [
        r
        for r in records
        if r["predicted_iou"] > iou_thresh and r["stability_score"] >= stability_thresh
    ]
    if not kept:
        return []
    boxes = np.asarray([_xyxy(r["bbox"]) for r in kept], dtype=np.float64)
    scores = np.asarray([r["predicted_iou"] for r in kept], dtype=np.float32)
    order = box_nms(boxes, scores, NMS_THRESH)
    return [kept[i] for i in order if kept[i]["area"] < MAX_AREA_FRACTION * area]


def choose(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The rule of the module docstring."""
    strict = f"precision@{max(IOU_THRESHOLDS):g}"
    loose_recall = f"recall@{min(IOU_THRESHOLDS):g}"
    passing = [r for r in rows if r[strict] is not None and r[strict] >= target]
    if passing:
        return max(passing, key=lambda r: (r[loose_recall], r[strict]))
    return max(rows, key=lambda r: (r[strict] or 0.0, r[loose_recall] or 0.0))


def _row(counts: MatchCounts, iou_thresh: float, stability_thresh: float) -> dict[str, Any]:
    return {
        "pred_iou_thresh": iou_thresh,
        "stability_score_thresh": stability_thresh,
        **counts.summary(),
    }


def _fmt(value: float | None) -> str:
    return "  —  " if value is None else f"{value:5.3f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--domain", default="A", choices=["A", "B"])
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--target", type=float, default=0.9, help="precision@0.75 to reach")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="verify one grid point directly")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)

    import os

    import django
    import torch

    # PREFILL_DEFAULTS live with the service; Django's default settings (SQLite, no server).
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from annotation.services.semi_automatic import PREFILL_DEFAULTS
    from engine.sam.amg.generator import SamAutomaticMaskGenerator
    from engine.sam.checkpoint import load_sam
    from training.loop.scenes import scene_dataset

    torch.set_num_threads(args.threads)
    model = load_sam(SEED_CHECKPOINT)
    sweep = SamAutomaticMaskGenerator(
        model,
        points_per_side=args.points_per_side,
        pred_iou_thresh=min(IOU_GRID),
        stability_score_thresh=min(STABILITY_GRID),
        box_nms_thresh=1.0,
        output_mode="coco_rle",
    )
    grid = [(i, s) for i in IOU_GRID for s in STABILITY_GRID]
    counts = {point: MatchCounts() for point in grid}
    reference = MatchCounts()
    stored: list[tuple[np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]] = []
    started = time.perf_counter()
    for scene in scene_dataset(args.scenes, args.domain, first_seed=args.first_seed):
        area = scene.image.shape[0] * scene.image.shape[1]
        truth = [binary_to_rle(mask) for mask in scene.masks]
        records = candidates_for(sweep, scene.image)
        stored.append((scene.image, records, truth))
        for point, tally in counts.items():
            chosen = select(records, iou_thresh=point[0], stability_thresh=point[1], area=area)
            tally.add(rle_iou([r["segmentation"] for r in chosen], truth))
        ref = select(records, iou_thresh=REFERENCE[0], stability_thresh=REFERENCE[1], area=area)
        reference.add(rle_iou([r["segmentation"] for r in ref], truth))
    sweep_seconds = time.perf_counter() - started

    rows = [_row(counts[p], *p) for p in grid]
    best = choose(rows, args.target)
    ref_row = _row(reference, *REFERENCE)

    print(
        f"prefill precision: seed vit_tiny (domain A), {args.scenes} domain-{args.domain} scenes "
        f"(seeds {args.first_seed}..{args.first_seed + args.scenes - 1}), "
        f"{args.points_per_side}x{args.points_per_side} grid, {args.threads} threads, "
        f"sweep {sweep_seconds:.0f} s"
    )
    print(
        f"ground-truth objects: {ref_row['ground_truth']} "
        f"({ref_row['ground_truth'] / max(1, args.scenes):.1f} per image)"
    )
    print()
    print(" iou  stab  masks/img  P@0.5  P@0.75  R@0.5  R@0.75")
    for row in rows:
        mark = "  <- chosen" if row is best else ""
        print(
            f"{row['pred_iou_thresh']:.2f}  {row['stability_score_thresh']:.2f}  "
            f"{row['masks_per_image']:9.2f}  {_fmt(row['precision@0.5'])}  "
            f"{_fmt(row['precision@0.75'])}   {_fmt(row['recall@0.5'])}  "
            f"{_fmt(row['recall@0.75'])}{mark}"
        )
    print()
    print(
        f"reference (official thresholds {REFERENCE[0]} / {REFERENCE[1]}): "
        f"{ref_row['masks_per_image']:.2f} masks/img, P@0.75 {_fmt(ref_row['precision@0.75'])}, "
        f"R@0.5 {_fmt(ref_row['recall@0.5'])}"
    )
    print(
        f"chosen ({best['pred_iou_thresh']} / {best['stability_score_thresh']}, target "
        f"P@0.75 >= {args.target}) vs reference: P@0.75 "
        f"{_ratio(best['precision@0.75'], ref_row['precision@0.75'])}, R@0.5 "
        f"{_ratio(best['recall@0.5'], ref_row['recall@0.5'])}, masks/img "
        f"{_ratio(best['masks_per_image'], ref_row['masks_per_image'])}"
    )

    # The chosen thresholds with every other PREFILL_DEFAULTS setting (region cleanup too).
    chosen_settings = {
        **PREFILL_DEFAULTS,
        "pred_iou_thresh": best["pred_iou_thresh"],
        "stability_score_thresh": best["stability_score_thresh"],
        "points_per_side": args.points_per_side,
        "output_mode": "coco_rle",
    }
    ships = all(
        PREFILL_DEFAULTS.get(key) == chosen_settings[key]
        for key in ("pred_iou_thresh", "stability_score_thresh", "points_per_side")
    )
    end_to_end = MatchCounts()
    generator = SamAutomaticMaskGenerator(model, **chosen_settings)
    started = time.perf_counter()
    for image, _, truth in stored:
        records = generator.generate(image)
        end_to_end.add(rle_iou([r["segmentation"] for r in records], truth))
    e2e_seconds = time.perf_counter() - started
    e2e = end_to_end.summary()
    print(
        f"chosen thresholds end to end with the other PREFILL_DEFAULTS (min region "
        f"{PREFILL_DEFAULTS.get('min_mask_region_area', 0)} px, max area "
        f"{PREFILL_DEFAULTS.get('max_mask_area_fraction')}): "
        f"{e2e['masks_per_image']:.2f} masks/img, P@0.5 {_fmt(e2e['precision@0.5'])}, "
        f"P@0.75 {_fmt(e2e['precision@0.75'])}, R@0.5 {_fmt(e2e['recall@0.5'])}, "
        f"R@0.75 {_fmt(e2e['recall@0.75'])}, {e2e_seconds / max(1, len(stored)):.1f} s/image"
    )
    print(
        "PREFILL_DEFAULTS ship these thresholds"
        if ships
        else f"PREFILL_DEFAULTS differ: {PREFILL_DEFAULTS['pred_iou_thresh']} / "
        f"{PREFILL_DEFAULTS['stability_score_thresh']} (update them from this run)"
    )

    checked: dict[str, Any] | None = None
    if args.check and stored:
        image, records, _ = stored[0]
        point = (best["pred_iou_thresh"], best["stability_score_thresh"])
        direct = SamAutomaticMaskGenerator(
            model,
            points_per_side=args.points_per_side,
            pred_iou_thresh=point[0],
            stability_score_thresh=point[1],
            max_mask_area_fraction=MAX_AREA_FRACTION,
            output_mode="coco_rle",
        ).generate(image)
        area = image.shape[0] * image.shape[1]
        replayed = select(records, iou_thresh=point[0], stability_thresh=point[1], area=area)
        same = sorted(r["segmentation"]["counts"] for r in direct) == sorted(
            r["segmentation"]["counts"] for r in replayed
        )
        checked = {"direct": len(direct), "replayed": len(replayed), "same_masks": same}
        print(
            f"check at {point}: generator {len(direct)} masks, replay {len(replayed)}, "
            f"identical: {same}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"grid": rows, "reference": ref_row, "chosen": best, "end_to_end": e2e,
                 "check": checked},
                indent=2,
            )
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
