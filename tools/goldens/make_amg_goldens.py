"""Golden outputs of the official SamAutomaticMaskGenerator, for engine/sam/amg's parity tests.

Runs in the reference environment (see make_sam_goldens.py), which also needs OpenCV for the
official small-region clean-up::

    /tmp/refvenv/bin/pip install opencv-python-headless
    /tmp/refvenv/bin/python tools/goldens/make_amg_goldens.py

The seeded tiny model of tiny_sam.pth answers every grid point with the same speckled,
whole-image mask (box NMS then leaves one record), which tests nothing. amg_tiny_sam.pth is that
checkpoint with a few tensors reshaped so masks follow the image (see `amg_state`): encoder
blocks damped (smooth embeddings), the decoder's transposed convolutions made spatially uniform
(no 4 x 4 texture), mask logits scaled up (stability scores spread over [0, 1]) and IoU
predictions shifted up by 1 (so the default 0.88 threshold keeps some). Weights stay random.

Writes under tests/engine/sam/goldens/: amg_tiny_sam.pth (float16), amg_images.npz (the two
images of make_sam_goldens.make_images) and amg_goldens.json: per case the generator
parameters, the image index and every official record (COCO RLE counts as str), in order.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from amg_weights import structured_state
from make_sam_goldens import GOLDENS, VIT_TINY, build_official, make_images
from pycocotools import mask as coco_mask
from segment_anything import SamAutomaticMaskGenerator

# Thresholds low enough that the random-weight model yields tens of records per case.
LOW = {"pred_iou_thresh": 0.3, "stability_score_thresh": 0.3, "box_nms_thresh": 0.95}
CASES: list[dict[str, Any]] = [
    # Official defaults but a 16 x 16 grid: at 32 x 32 the tiny decoder alone takes over a
    # minute on two CPU cores, too slow for the test suite (bench/sam_amg.py runs defaults).
    {"name": "defaults_grid16", "image": 0, "params": {"points_per_side": 16}},
    # The official default grid (32 x 32 = 16 batches of 64 points).
    {"name": "defaults_grid32", "image": 1, "params": {}},
    {"name": "grid32_low", "image": 0, "params": {"points_per_side": 32, **LOW}},
    {"name": "grid12_low", "image": 1, "params": {"points_per_side": 12, **LOW}},
    {"name": "crops", "image": 0, "params": {"points_per_side": 8, "crop_n_layers": 1, **LOW}},
    {
        "name": "small_regions",
        "image": 0,
        "params": {"points_per_side": 12, "min_mask_region_area": 100, **LOW},
    },
]


def amg_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """tiny_sam.pth's tensors reshaped by amg_weights.structured_state, float16-exact."""
    return {name: value.half() for name, value in structured_state(state).items()}


def record_json(record: dict[str, Any]) -> dict[str, Any]:
    segmentation = record["segmentation"]
    if isinstance(segmentation, np.ndarray):
        rle = coco_mask.encode(np.asfortranarray(segmentation.astype(np.uint8)))
    else:
        height, width = segmentation["size"]
        rle = coco_mask.frPyObjects(segmentation, height, width)
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": rle["counts"].decode("ascii"),
        "area": int(record["area"]),
        "bbox": [int(v) for v in record["bbox"]],
        "predicted_iou": float(record["predicted_iou"]),
        "stability_score": float(record["stability_score"]),
        "point_coords": [[float(v) for v in record["point_coords"][0]]],
        "crop_box": [int(v) for v in record["crop_box"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=GOLDENS)
    args = parser.parse_args()
    source = torch.load(GOLDENS / "tiny_sam.pth", map_location="cpu", weights_only=True)
    state = amg_state(source)
    sam = build_official(VIT_TINY)
    sam.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    images = make_images()
    cases = []
    for case in CASES:
        generator = SamAutomaticMaskGenerator(sam, output_mode="uncompressed_rle", **case["params"])
        start = time.perf_counter()
        records = generator.generate(images[case["image"]])
        seconds = time.perf_counter() - start
        print(f"{case['name']}: {len(records)} records in {seconds:.1f} s")
        cases.append({**case, "records": [record_json(r) for r in records]})
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out_dir / "amg_tiny_sam.pth")
    np.savez_compressed(args.out_dir / "amg_images.npz", *images)
    text = json.dumps({"cases": cases}, separators=(",", ":"))
    (args.out_dir / "amg_goldens.json").write_text(text + "\n")
    print(f"wrote {args.out_dir} ({len(text) / 1e3:.0f} kB of records)")


if __name__ == "__main__":
    main()
