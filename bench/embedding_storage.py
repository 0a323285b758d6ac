"""Does storing embeddings as float16 change the masks? And how long does an embedding take?

    python bench/embedding_storage.py [--checkpoint PATH] [--images 6] [--seed 0]

Embeds synthetic images (smooth shapes on a background, several sizes) with the given
checkpoint (default: the golden vit_tiny of tests/engine/sam/goldens), then for each image
decodes 7 prompts (1 point, 2 points, a box, box + point; multimask and single) from

* the float32 embedding (what a float32 blob gives back), and
* the same embedding rounded to float16 and back (exactly what a float16 blob gives back),

and prints the fraction of mask pixels that differ, the IoU between the two masks (worst
case), the largest IoU-prediction difference, the time per image of the encoder (fp32, and
bf16 autocast) and the stored size per embedding. Framework-free: engine.sam and numpy only.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.sam.checkpoint import load_sam  # noqa: E402
from engine.sam.embedding import embed_images  # noqa: E402
from engine.sam.predictor import SamPredictor  # noqa: E402

GOLDEN = REPO / "tests" / "engine" / "sam" / "goldens" / "tiny_sam.pth"
SIZES = [(480, 640), (640, 480), (300, 1000), (768, 1024), (200, 200), (1000, 750)]


def synthetic_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = rng.integers(0, 255, 3)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(6):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.05, 0.3) * height, rng.uniform(0.05, 0.3) * width
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        image[inside] = rng.integers(0, 255, 3)
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def prompts(height: int, width: int) -> list[dict[str, object]]:
    point = np.array([[0.5 * width, 0.5 * height]])
    pair = np.array([[0.3 * width, 0.4 * height], [0.7 * width, 0.6 * height]])
    box = np.array([0.2 * width, 0.2 * height, 0.8 * width, 0.7 * height])
    return [
        {"point_coords": point, "point_labels": np.array([1]), "multimask_output": True},
        {"point_coords": point, "point_labels": np.array([1]), "multimask_output": False},
        {"point_coords": pair, "point_labels": np.array([1, 0]), "multimask_output": True},
        {"point_coords": pair, "point_labels": np.array([1, 1]), "multimask_output": False},
        {"box": box, "multimask_output": False},
        {"box": box, "multimask_output": True},
        {"point_coords": point, "point_labels": np.array([0]), "box": box},
    ]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=GOLDEN)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = load_sam(args.checkpoint)
    rng = np.random.default_rng(args.seed)
    images = [synthetic_image(rng, *SIZES[i % len(SIZES)]) for i in range(args.images)]

    embed_images(model, images[:1])  # warm-up
    timings = {}
    for precision in ("fp32", "bf16"):
        start = time.perf_counter()
        embeddings = embed_images(model, images, precision=precision, batch_size=1)
        timings[precision] = (time.perf_counter() - start) / len(images)
        if precision == "fp32":
            kept = embeddings

    predictor = SamPredictor(model)
    differing = total = 0
    worst_iou, iou_pred_diff, scale = 1.0, 0.0, 0.0
    for embedding in kept:
        scale = max(scale, float(embedding.embedding.abs().max()))
        rounded = embedding.embedding.half().float()
        decoded = []
        for features in (embedding.embedding, rounded):
            predictor.set_embedding(features, embedding.original_size)
            decoded.append(
                [predictor.predict(**p) for p in prompts(*embedding.original_size)]  # type: ignore[arg-type]
            )
        for (masks32, iou32, _), (masks16, iou16, _) in zip(*decoded, strict=True):
            differing += int((masks32 != masks16).sum())
            total += masks32.size
            iou_pred_diff = max(iou_pred_diff, float(np.abs(iou32 - iou16).max()))
            for m32, m16 in zip(masks32, masks16, strict=True):
                worst_iou = min(worst_iou, iou(m32, m16))
    channels = kept[0].embedding.shape[1]
    print(f"checkpoint {args.checkpoint.name}: {len(images)} images, 7 prompts each")
    print(f"embedding max |value| {scale:.3g}, shape {tuple(kept[0].embedding.shape)}")
    print(
        f"fp16 vs fp32 storage: {differing / total:.3e} of mask pixels differ "
        f"({differing} of {total}); worst mask IoU {worst_iou:.6f}; "
        f"max |iou prediction diff| {iou_pred_diff:.2e}"
    )
    print(
        f"stored bytes per embedding: float32 {channels * 64 * 64 * 4}, "
        f"float16 {channels * 64 * 64 * 2} (+ ~0.5 KB npz header)"
    )
    print(
        f"encoder time per image on CPU ({torch.get_num_threads()} threads): "
        f"fp32 {timings['fp32'] * 1000:.0f} ms, bf16 {timings['bf16'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
