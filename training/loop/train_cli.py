"""Train a SAM on synthetic scenes and write our checkpoint format.

    python -m training.loop.train_cli --arch vit_tiny --domain A --scenes 200 --steps 300 \
        --scope full --out seed.pth [--init ckpt] [--lr 1e-3] [--seed 0] [--work-dir D]
    torchrun --nproc_per_node 2 -m training.loop.train_cli ...   # DDP (gloo on CPU, nccl on CUDA)

A run given ``--work-dir`` resumes from the state saved there; without it the state lives in a
temporary directory that is removed at the end.
"""

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from engine.sam.build import build_sam_from_config
from engine.sam.checkpoint import read_checkpoint, sam_from_state_dict, save_sam
from engine.sam.config import CONFIGS, SamConfig
from engine.sam.malloc import tune_malloc
from engine.sam.modeling import Sam
from training.loop.data import samples_from_scenes
from training.loop.optim import SCOPES
from training.loop.resize import load_resized
from training.loop.scenes import DEFAULT_SIZE, DOMAINS, scene_dataset
from training.loop.trainer import TrainConfig, TrainProgress, TrainResult, train


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(CONFIGS), default="vit_tiny")
    parser.add_argument(
        "--set",
        dest="config_set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one field of --arch's configuration for a new model, e.g. "
        "prompt_embed_dim=256 (repeatable; tuples as 1,3); an --init checkpoint keeps its own",
    )
    parser.add_argument("--domain", choices=DOMAINS, default="A")
    parser.add_argument("--scenes", type=int, default=200, help="number of synthetic scenes")
    parser.add_argument("--first-scene", type=int, default=0, help="seed of the first scene")
    parser.add_argument("--scene-size", type=int, nargs=2, default=DEFAULT_SIZE, metavar=("H", "W"))
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--scope", choices=SCOPES, default="full")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--init", type=Path, help="checkpoint to start from (else random init)")
    parser.add_argument(
        "--image-size",
        type=int,
        help="input size of the model (default: the architecture's, 1024); an --init checkpoint "
        "of another input size has its position tables resampled (progressive resolution)",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, help="resumable state directory")
    parser.add_argument("--images-per-step", type=int, default=1)
    parser.add_argument("--masks-per-image", type=int, default=16)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=11)
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--decay-steps", type=int, nargs="*", default=[])
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument(
        "--loss-side",
        type=int,
        default=0,
        help="grid side the ground truth and losses are computed at (0: the low-res side)",
    )
    parser.add_argument(
        "--bf16", action="store_true", help="bf16 autocast (CUDA, or a CPU with native bf16)"
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="turn each image and its masks by a random grid symmetry (90-degree rotations, "
        "mirror); scope full only",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args(argv)
    if args.config_set and args.init is not None:
        parser.error("--set describes a new model; an --init checkpoint carries its configuration")
    try:
        args.config = config_with(CONFIGS[args.arch], args.config_set)
    except ValueError as exc:
        parser.error(str(exc))
    patch = args.config.patch_size
    if args.image_size is not None and (args.image_size < 64 or args.image_size % patch):
        parser.error(f"--image-size must be a multiple of {patch}, at least 64: {args.image_size}")
    if args.scenes < 1:
        parser.error(f"--scenes must be at least 1, got {args.scenes}")
    return args


def config_with(base: SamConfig, assignments: Sequence[str]) -> SamConfig:
    """``base`` with ``FIELD=VALUE`` assignments applied, each value read as its field's type;
    ValueError names an unknown field or a value that does not parse."""
    values = dataclasses.asdict(base)
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or name not in values:
            known = ", ".join(sorted(values))
            raise ValueError(
                f"--set {assignment!r}: expected FIELD=VALUE with FIELD one of {known}"
            )
        current = values[name]
        try:
            if isinstance(current, tuple):
                values[name] = tuple(int(part) for part in text.split(",") if part.strip())
            else:
                values[name] = type(current)(text)
        except ValueError:
            kind = (
                "comma-separated integers" if isinstance(current, tuple) else type(current).__name__
            )
            raise ValueError(f"--set {assignment!r}: {name} takes {kind}") from None
    return SamConfig.from_dict(values)


def _init_distributed(device: str) -> tuple[int, int, int]:
    """(rank, world, local rank); joins the process group torchrun describes in the env, with
    nccl when training on CUDA and gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if on_cuda else "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(choice)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _model(args: argparse.Namespace) -> tuple[Sam, SamConfig]:
    # Default input size: the architecture's (1024), also when resuming a smaller-input stage.
    image_size = args.image_size or args.config.image_size
    if args.init is not None:
        loaded = read_checkpoint(args.init, arch=args.arch)
        if loaded.config.image_size == image_size:
            return sam_from_state_dict(loaded.state_dict, loaded.config), loaded.config
        # The architecture the weights were trained in (with any --set of theirs), resized.
        config = dataclasses.replace(loaded.config, image_size=image_size)
        model = build_sam_from_config(config)
        load_resized(model, loaded.state_dict, config)
        return model, config
    config = dataclasses.replace(args.config, image_size=image_size)
    torch.manual_seed(args.seed)  # every rank builds the same initial weights
    return build_sam_from_config(config), config


def run(args: argparse.Namespace) -> TrainResult:
    rank, world, local_rank = _init_distributed(args.device)
    try:
        device = _device(args.device, local_rank)
        model, sam_config = _model(args)
        config = TrainConfig(
            steps=args.steps,
            scope=args.scope,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            decay_steps=tuple(args.decay_steps),
            images_per_step=args.images_per_step,
            masks_per_image=args.masks_per_image,
            accumulate=args.accumulate,
            iterations=args.iterations,
            bf16=args.bf16,
            augment=args.augment,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            loss_side=args.loss_side,
        )
        scenes = scene_dataset(args.scenes, args.domain, args.first_scene, tuple(args.scene_size))
        samples = samples_from_scenes(scenes)
        bar = tqdm(total=args.steps, disable=rank != 0, desc=f"train {args.scope}", unit="step")

        def show(progress: TrainProgress) -> None:
            bar.n = progress.step
            bar.set_postfix(loss=f"{progress.loss:.4f}", iou=f"{progress.iou:.3f}", refresh=False)
            bar.refresh()

        with tempfile.TemporaryDirectory(prefix="maskloop-train-") as scratch:
            work_dir = args.work_dir if args.work_dir is not None else Path(scratch)
            result = train(
                model, samples, config, work_dir=work_dir, device=device, on_progress=show
            )
        bar.close()
        if rank == 0:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            sha256 = save_sam(model, args.out, arch=args.arch, config=sam_config)
            print(
                f"{result.steps_done} steps on {world} process(es), {result.masks_seen} masks in "
                f"{result.seconds:.1f} s ({result.masks_per_second:.2f} masks/s, "
                f"final loss {result.loss_curve[-1][1]:.4f}); wrote {args.out} sha256 {sha256}"
            )
        return result
    finally:
        if world > 1:
            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tune_malloc()  # keep freed tensor blocks for reuse (engine/sam/malloc.py)
    try:
        run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
