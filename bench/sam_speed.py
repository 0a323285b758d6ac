"""Speed of engine.sam against the official segment-anything, measured in the same run.

    .venv/bin/python -m bench.sam_speed                      # vit_b, CPU, 3 repetitions
    .venv/bin/python -m bench.sam_speed --arch vit_tiny      # quick check
    SAM_REF_PYTHON=/other/venv/bin/python .venv/bin/python -m bench.sam_speed

Same weights on both sides: a seeded random `arch` model saved once to a temporary .pth in the
official key layout, loaded by our `load_sam` and by the official `sam_model_registry`. Same
images (synthetic, non-square, full-size photos' shapes). The official package runs in its own
environment (it needs torchvision) as a worker process, tools/goldens/ref_speed.py, started
with the Python named by SAM_REF_PYTHON (default /tmp/refvenv/bin/python); when that is
missing only our figures are printed. Both sides run with the same torch thread count.

Every repetition embeds one image on each side (our fp32, our bf16, official fp32, in an
order that rotates between repetitions) and then alternates 1-point multimask predictions
call by call, so load from other processes on a shared machine falls on both sides alike.
The first repetition is a warm-up and is not counted; figures are medians. Times are wall
seconds of the user-facing call: `set_image` (resize + normalise + encoder) and `predict`.
With CUDA, embedding throughput at batch 8 (encoder on pre-resized images, bf16 here vs
official fp32) is measured too.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.sam.build import build_sam
from engine.sam.checkpoint import load_sam
from engine.sam.device import compile_image_encoder, select_device
from engine.sam.embedding import encode_batch
from engine.sam.malloc import tune_malloc, tuned_env
from engine.sam.modeling import Sam
from engine.sam.predictor import SamPredictor
from engine.sam.transforms import ResizeLongestSide

REPO = Path(__file__).resolve().parents[1]
REF_SCRIPT = REPO / "tools" / "goldens" / "ref_speed.py"
DEFAULT_REF_PYTHON = "/tmp/refvenv/bin/python"
IMAGE_SHAPES = ((768, 1024), (1200, 900), (683, 1024))
POINTS = ((0.3, 0.4), (0.5, 0.5), (0.7, 0.6))
GOALS = {"embed_fp32": 0.8, "embed_bf16": 0.4, "predict": 1.0}
# LayerNorm2d modules inside nn.Sequential stacks (their parameters carry no "norm" in the key).
NORM_PREFIXES = (
    "image_encoder.neck.1.",
    "image_encoder.neck.3.",
    "mask_decoder.output_upscaling.1.",
    "prompt_encoder.mask_downscaling.1.",
    "prompt_encoder.mask_downscaling.4.",
)


def random_official_state(sam: Sam, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights in the official layout with every tensor non-trivial (not the init)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in sam.state_dict().items():
        noise = torch.randn(tensor.shape, generator=generator)
        if "norm" in name or name.startswith(NORM_PREFIXES):
            state[name] = 1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
        elif "pos_embed" in name or "rel_pos" in name:
            state[name] = 0.1 * noise
        elif name.endswith("bias"):
            state[name] = 0.02 * noise
        elif tensor.ndim > 1 and "embed" not in name and "gaussian" not in name:
            state[name] = noise / tensor[0].numel() ** 0.5
        else:
            state[name] = noise
    return state


def make_images(count: int) -> list[np.ndarray]:
    """Smooth gradients with a few solid discs, at typical photo shapes (H x W x 3 uint8)."""
    images = []
    for index in range(count):
        height, width = IMAGE_SHAPES[index % len(IMAGE_SHAPES)]
        rng = np.random.default_rng(index)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        image = np.stack(
            [255 * xx / width, 255 * yy / height, 128 + 60 * np.sin(xx / 37 + yy / 53)], axis=-1
        )
        for _ in range(6):
            cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(40, 200)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = rng.uniform(0, 255, size=3)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images


class Reference:
    """The official package in its own interpreter, one JSON command per line."""

    def __init__(self, python: str) -> None:
        self.process = subprocess.Popen(
            [python, str(REF_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, **tuned_env()},  # the allocator settings of this process
        )

    def call(self, cmd: str, **kwargs: Any) -> dict[str, Any]:
        stdin, stdout = self._pipes()
        stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError("the reference worker exited; see its stderr above")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"reference {cmd} failed: {answer['error']}")
        return answer

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        if self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError("reference worker has no pipes")
        return self.process.stdin, self.process.stdout

    def close(self) -> None:
        if self.process.poll() is None:
            stdin, _ = self._pipes()
            stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            stdin.flush()
            self.process.wait(timeout=60)


def start_reference(args: argparse.Namespace, checkpoint: Path) -> Reference | None:
    python = os.environ.get("SAM_REF_PYTHON", DEFAULT_REF_PYTHON)
    if not Path(python).is_file():
        print(f"reference unavailable: {python} not found (set SAM_REF_PYTHON); ours only")
        return None
    reference = Reference(python)
    info = reference.call(
        "load",
        arch=args.arch,
        checkpoint=str(checkpoint),
        threads=args.threads,
        device=str(args.device),
    )
    print(f"official: torch {info['torch']}, {info['threads']} threads")
    return reference


def timed_set_image(predictor: SamPredictor, image: np.ndarray) -> float:
    sync(predictor.device)
    start = time.perf_counter()
    predictor.set_image(image)
    sync(predictor.device)
    return time.perf_counter() - start


def timed_predict(predictor: SamPredictor, point: np.ndarray) -> tuple[float, np.ndarray]:
    sync(predictor.device)
    start = time.perf_counter()
    masks, _, _ = predictor.predict(
        point_coords=point[None], point_labels=np.array([1]), multimask_output=True
    )
    sync(predictor.device)
    return time.perf_counter() - start, masks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_repetitions(
    args: argparse.Namespace, sam: Sam, reference: Reference | None, work: Path
) -> dict[str, list[float]]:
    ours = {"fp32": SamPredictor(sam), "bf16": SamPredictor(sam, precision="bf16")}
    images = make_images(args.images)
    results: dict[str, list[float]] = {
        key: []
        for key in (
            "embed_fp32",
            "embed_bf16",
            "embed_official",
            "predict_ours",
            "predict_official",
            "bf16_mask_diff",
            "official_mask_diff",
            "official_embedding_diff",
        )
    }
    sides = ["fp32", "bf16", "official"]
    for rep in range(args.repeats + 1):
        counted = rep > 0
        image = images[rep % len(images)]
        np.save(work / "image.npy", image)
        order = sides[rep % 3 :] + sides[: rep % 3]
        seconds: dict[str, float] = {}
        for side in order:
            if side == "official":
                if reference is not None:
                    embedded = reference.call(
                        "set_image",
                        image=str(work / "image.npy"),
                        embedding_out=str(work / "embedding.npy"),
                    )
                    seconds["official"] = float(embedded["seconds"])
            else:
                seconds[side] = timed_set_image(ours[side], image)
        height, width = image.shape[:2]
        for number, (fx, fy) in enumerate(POINTS):
            point = np.array([fx * width, fy * height])
            answer: dict[str, Any] = {}
            official_first = (rep + number) % 2 == 1  # alternate who predicts first
            if reference is not None and official_first:
                answer = reference.call(
                    "predict", point=point.tolist(), masks_out=str(work / "masks.npy")
                )
            predict_seconds, masks = timed_predict(ours["fp32"], point)
            if reference is not None and not official_first:
                answer = reference.call(
                    "predict", point=point.tolist(), masks_out=str(work / "masks.npy")
                )
            _, masks_bf16 = timed_predict(ours["bf16"], point)
            if not counted:
                continue
            results["predict_ours"].append(predict_seconds)
            results["bf16_mask_diff"].append(float((masks != masks_bf16).mean()))
            if reference is not None:
                results["predict_official"].append(float(answer["seconds"]))
                official = np.load(work / "masks.npy")
                results["official_mask_diff"].append(float((masks != official).mean()))
        if reference is not None and counted:
            official_embedding = np.load(work / "embedding.npy")
            ours_embedding = ours["fp32"].get_image_embedding().cpu().numpy()
            scale = float(np.abs(official_embedding).max())
            diff = float(np.abs(ours_embedding - official_embedding).max()) / scale
            results["official_embedding_diff"].append(diff)
        note = "warm-up" if not counted else f"rep {rep}"
        print(
            f"  {note}: image {height}x{width}, order {order}, set_image s: "
            + ", ".join(f"{key} {value:.3f}" for key, value in seconds.items())
        )
        if counted:
            for side, value in seconds.items():
                results[f"embed_{side}"].append(value)
    return results


def cuda_throughput(
    args: argparse.Namespace, sam: Sam, reference: Reference | None, work: Path
) -> None:
    batch = 8
    resize = ResizeLongestSide(sam.image_encoder.img_size)
    padded = torch.zeros((batch, 3, 1024, 1024), dtype=torch.uint8)
    for index, image in enumerate(make_images(batch)):
        resized = torch.from_numpy(resize.apply_image(image)).permute(2, 0, 1)
        padded[index, :, : resized.shape[1], : resized.shape[2]] = resized
    times = []
    for _ in range(args.repeats + 1):
        sync(sam.device)
        start = time.perf_counter()
        encode_batch(sam, list(padded), precision="bf16")
        sync(sam.device)
        times.append(time.perf_counter() - start)
    ours = batch / statistics.median(times[1:])
    print(f"cuda embedding throughput, batch {batch}: ours bf16 {ours:.1f} images/s")
    if reference is None:
        return
    np.save(work / "batch.npy", padded.permute(0, 2, 3, 1).numpy())
    answer = reference.call("encode_batch", images=str(work / "batch.npy"), repeats=1)
    answer = reference.call("encode_batch", images=str(work / "batch.npy"), repeats=args.repeats)
    official = batch / statistics.median(answer["seconds"])
    print(
        f"  official fp32 {official:.1f} images/s; ratio ours/official {ours / official:.1f}x "
        f"(goal >= 8x)"
    )


def print_table(results: dict[str, list[float]], has_reference: bool) -> None:
    def med(key: str) -> float:
        return statistics.median(results[key]) if results[key] else float("nan")

    rows = [
        ("image embedding fp32 (s)", med("embed_fp32"), med("embed_official"), "embed_fp32"),
        ("image embedding bf16 (s)", med("embed_bf16"), med("embed_official"), "embed_bf16"),
        ("predict 1 pt multimask (ms)", 1e3 * med("predict_ours"), 1e3 * med("predict_official"),
         "predict"),
    ]  # fmt: skip
    pairs = {
        "embed_fp32": ("embed_fp32", "embed_official"),
        "embed_bf16": ("embed_bf16", "embed_official"),
        "predict": ("predict_ours", "predict_official"),
    }
    print(f"{'':30} {'ours':>10} {'official':>10} {'ratio':>7} {'paired':>7} {'goal':>8}")
    for label, ours, official, goal_key in rows:
        ratio = ours / official if has_reference else float("nan")
        mine, theirs = pairs[goal_key]
        paired = float("nan")
        if has_reference:  # median of the per-repetition ratios (same image, same moment)
            paired = statistics.median(
                a / b for a, b in zip(results[mine], results[theirs], strict=True)
            )
        goal = GOALS[goal_key]
        verdict = "" if not has_reference else ("ok" if ratio <= goal else "MISSED")
        print(f"{label:30} {ours:10.3f} {official:10.3f} {ratio:7.2f} {paired:7.2f} "
              f"{'<= ' + str(goal):>8} {verdict}")  # fmt: skip
    diffs = results["bf16_mask_diff"]
    print(
        f"masks bf16 vs fp32, % pixels differing: mean {100 * np.mean(diffs):.3f}%, "
        f"max {100 * np.max(diffs):.3f}% over {len(diffs)} predictions (goal <= 1%)"
    )
    if has_reference:
        print(
            f"parity ours fp32 vs official: embedding max diff/scale "
            f"{max(results['official_embedding_diff']):.1e}, masks differing max "
            f"{100 * max(results['official_mask_diff']):.4f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_b", help="vit_b (default), vit_tiny, vit_l, vit_h")
    parser.add_argument("--repeats", type=int, default=3, help="counted repetitions (>= 3)")
    parser.add_argument("--images", type=int, default=3, help="distinct images, cycled")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--sdpa", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile our encoder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (medians of fewer mean little)")
    if args.threads < 1 or args.images < 1:
        parser.error("--threads and --images must be positive")
    args.device = select_device(args.device)
    torch.set_num_threads(args.threads)
    tuned = tune_malloc()  # as the platform's processes run; the reference gets the same
    print(
        f"{args.arch}, seeded random weights, {args.threads} torch threads, device "
        f"{args.device}, ours: torch {torch.__version__}, sdpa {args.sdpa}, malloc tuned "
        f"{'yes' if tuned else 'no'} (both sides)"
    )
    with tempfile.TemporaryDirectory(prefix="sam-speed-") as tmp:
        work = Path(tmp)
        checkpoint = work / f"sam_{args.arch}_random.pth"
        torch.save(random_official_state(build_sam(args.arch), args.seed), checkpoint)
        sam = load_sam(checkpoint, arch=args.arch).to(args.device)
        sam.image_encoder.set_sdpa({"auto": None, "on": True, "off": False}[args.sdpa])
        if args.compile:
            compile_image_encoder(sam)
        reference = start_reference(args, checkpoint)
        try:
            results = run_repetitions(args, sam, reference, work)
            print_table(results, reference is not None)
            if args.device.type == "cuda":
                cuda_throughput(args, sam, reference, work)
        finally:
            if reference is not None:
                reference.close()


if __name__ == "__main__":
    main()
