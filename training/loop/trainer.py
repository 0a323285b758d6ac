"""The training driver: SAM's simulated interactive training over a set of samples.

    result = train(model, samples, TrainConfig(steps=200, scope="decoder"), work_dir=Path("run"))

Each optimizer step takes ``accumulate`` micro-batches of ``images_per_step`` images per process,
up to ``masks_per_image`` ground-truth masks each, and runs the 11-iteration interaction of
``interactive.interactive_step`` on every mask. With a frozen encoder ("decoder",
"decoder+prompt") each image is embedded once, without gradient, and the embedding is kept for
the run; with "full" the encoder runs with gradient every step.

Under ``torch.distributed`` (world size > 1) the model is wrapped in DistributedDataParallel,
the images of a step are sharded by rank and gradients are averaged; only rank 0 writes the
state file and calls ``on_checkpoint``. ``work_dir/state.pt`` (model, optimizer, scheduler, RNG,
step, curve) is written every ``checkpoint_every`` steps, on stop and at the end; a run started
on a work_dir holding one continues exactly where it stopped.
"""

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from engine.sam.device import native_bf16, select_device
from engine.sam.embedding import encode_batch
from engine.sam.modeling import Sam
from training.loop.data import (
    TrainImage,
    TrainSample,
    apply_symmetry,
    masks_to_frame,
    resize_image,
    slot_image,
    slot_masks,
    slot_prompt_seed,
    slot_symmetry,
    step_slots,
    training_images,
)
from training.loop.interactive import interactive_step
from training.loop.optim import (
    Scope,
    accumulate,
    apply_training_state,
    build_optimizer,
    build_scheduler,
    capture_rng_state,
    read_training_state,
    restore_rng_state,
    save_training_state,
)
from training.loop.run_types import TrainConfig, TrainProgress, TrainResult

__all__ = ["STATE_FILE", "TrainConfig", "TrainProgress", "TrainResult", "train"]

STATE_FILE = "state.pt"
# Settings that decide what a step computes: a state written under other values cannot resume.
_RESUME_FIELDS = (
    "scope",
    "seed",
    "images_per_step",
    "masks_per_image",
    "accumulate",
    "iterations",
    "max_mask_fraction",
    "loss_side",
    "augment",
)


@dataclass
class _Item:
    """One image of a micro-batch: its embedding (frozen encoder, 1 x C x h x w) or its
    resized pixels (full, 3 x h x w uint8), its masks (M x S x S bool, input frame) and the
    generator drawing their prompts."""

    embedding: Tensor | None
    pixels: Tensor | None
    gt: Tensor
    generator: torch.Generator


@dataclass
class _Run:
    """Progress carried in the state file so a resumed run reports the whole run."""

    step: int = 0
    masks_seen: int = 0
    seconds: float = 0.0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)


class _InteractiveLoss(nn.Module):
    """The model and its loss as one module, so DDP sees one forward per backward."""

    def __init__(self, sam: Sam, iterations: int) -> None:
        super().__init__()
        self.sam = sam
        self.iterations = iterations

    def forward(self, items: list[_Item]) -> tuple[Tensor, Tensor]:
        """-> (mean loss over the micro-batch's masks, with grad; their mean final IoU)."""
        embeddings: list[Tensor]
        if items[0].pixels is not None:
            pixels = [item.pixels for item in items if item.pixels is not None]
            batch = torch.stack([self.sam.preprocess(p[None].float())[0] for p in pixels])
            features = self.sam.image_encoder(batch)
            embeddings = [features[i : i + 1] for i in range(len(items))]
        else:
            embeddings = [item.embedding for item in items if item.embedding is not None]
        total = sum(item.gt.shape[0] for item in items)
        loss = torch.zeros((), device=items[0].gt.device)
        iou = 0.0
        # One interaction per image: each image's prompts come from its own generator, so the
        # result does not depend on which images share a batch or a process.
        for item, embedding in zip(items, embeddings, strict=True):
            share = item.gt.shape[0] / total
            result = interactive_step(
                self.sam, embedding, item.gt, generator=item.generator, iterations=self.iterations
            )
            loss = loss + result.loss * share
            iou += result.iteration_iou[-1] * share
        return loss, torch.tensor(iou)


def _dist_rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _autocast(config: TrainConfig, device: torch.device) -> AbstractContextManager[Any]:
    if not config.bf16:
        return nullcontext()
    if device.type not in ("cuda", "cpu"):
        warnings.warn(
            f"bf16 autocast is used on CUDA and CPU only; training in float32 on {device}",
            RuntimeWarning,
            stacklevel=4,
        )
        return nullcontext()
    if not native_bf16(device):
        # Honoured (the user asked for it), but emulated: on an AVX2-only CPU a vit_tiny step
        # took 25 s in bf16 against 4.2 s in float32 (docs/retraining.md).
        warnings.warn(
            f"{device} has no native bf16 (a CPU needs AVX512-BF16 or AMX): bf16 autocast is "
            "emulated and several times slower than float32",
            RuntimeWarning,
            stacklevel=4,
        )
    return torch.autocast(device.type, dtype=torch.bfloat16)


class _Trainer:
    """State of one ``train`` call; the steps are methods so each stays small."""

    def __init__(
        self,
        model: Sam,
        images: list[TrainImage],
        config: TrainConfig,
        device: torch.device,
        work_dir: Path,
    ) -> None:
        self.model = model
        self.images = images
        self.config = config
        self.device = device
        self.state_path = work_dir / STATE_FILE
        self.rank, self.world = _dist_rank_world()
        self.frozen_encoder = config.scope != "full"
        self.side = config.loss_side or model.prompt_encoder.mask_input_size[0]
        if model.img_size % self.side != 0:
            raise ValueError(
                f"loss_side {self.side} must divide the model's input size {model.img_size}"
            )
        self.embeddings: dict[str, Tensor] = {}
        self.optimizer = build_optimizer(
            model,
            cast(Scope, config.scope),  # checked by TrainConfig
            config.lr,
            weight_decay=config.weight_decay,
            layer_decay=config.layer_decay,
        )
        self.scheduler = build_scheduler(
            self.optimizer, config.warmup_steps, config.decay_steps, config.decay_factor
        )
        self.loss_module: nn.Module = _InteractiveLoss(model, config.iterations)
        self.autocast = _autocast(config, device)
        self.run = _Run()

    # -- data --------------------------------------------------------------------------------

    def _plans(self, step: int) -> list[list[tuple[int, TrainImage, Any]]]:
        """Per micro-batch: (slot, image, chosen mask ids) for this rank."""
        config = self.config
        plans = []
        for micro in range(config.accumulate):
            slots = step_slots(
                step,
                micro,
                images_per_step=config.images_per_step,
                accumulate=config.accumulate,
                rank=self.rank,
                world=self.world,
            )
            plan = []
            for slot in slots:
                image = self.images[slot_image(config.seed, slot, len(self.images))]
                chosen = slot_masks(config.seed, slot, image.mask_ids, config.masks_per_image)
                plan.append((slot, image, chosen))
            plans.append(plan)
        return plans

    def _embed_missing(self, images: list[TrainImage]) -> None:
        """Embed (no grad, once per run) the images of a micro-batch not yet in the cache."""
        missing: dict[str, TrainSample] = {}
        for image in images:
            if image.sample.key not in self.embeddings:
                missing[image.sample.key] = image.sample
        if not missing:
            return
        size = self.model.img_size
        resized = [resize_image(sample.image, size) for sample in missing.values()]
        precision = "bf16" if self.config.bf16 and self.device.type in ("cuda", "cpu") else "fp32"
        features = encode_batch(self.model, resized, precision=precision)
        for index, key in enumerate(missing):
            self.embeddings[key] = features[index : index + 1]

    def _items(self, plan: list[tuple[int, TrainImage, Any]]) -> list[_Item]:
        if self.frozen_encoder:
            self._embed_missing([image for _, image, _ in plan])
        size = self.model.img_size
        items = []
        for slot, image, chosen in plan:
            sample = image.sample
            pixels, masks = sample.image, [sample.masks[int(i)] for i in chosen]
            if self.config.augment:  # full scope only (TrainConfig): the encoder sees the turn
                symmetry = slot_symmetry(self.config.seed, slot)
                pixels = apply_symmetry(pixels, symmetry)
                masks = [apply_symmetry(mask, symmetry) for mask in masks]
            gt = masks_to_frame(masks, size, self.side)
            generator = torch.Generator(device=self.device)
            generator.manual_seed(slot_prompt_seed(self.config.seed, slot))
            items.append(
                _Item(
                    embedding=self.embeddings[sample.key] if self.frozen_encoder else None,
                    pixels=None
                    if self.frozen_encoder
                    else resize_image(pixels, size).to(self.device),
                    gt=gt.to(self.device),
                    generator=generator,
                )
            )
        return items

    # -- one step ------------------------------------------------------------------------------

    def step(self, wrapped: nn.Module) -> tuple[float, float, int]:
        """One optimizer step -> (loss, final-iteration IoU, masks) summed over processes."""
        plans = self._plans(self.run.step)
        sizes = [sum(len(chosen) for _, _, chosen in plan) for plan in plans]
        ious: list[float] = []

        def micro_loss(items: list[_Item]) -> Tensor:
            with self.autocast:
                loss, iou = wrapped(items)
            ious.append(float(iou))
            return loss

        self.optimizer.zero_grad(set_to_none=True)
        batches: Iterator[list[_Item]] = (self._items(plan) for plan in plans)
        loss = accumulate(micro_loss, batches, sizes)
        self.optimizer.step()
        self.scheduler.step()
        masks = sum(sizes)
        iou = sum(value * size for value, size in zip(ious, sizes, strict=True)) / masks
        if self.world == 1:
            return loss, iou, masks
        totals = torch.tensor([loss * masks, iou * masks, masks], dtype=torch.float64)
        totals = totals.to(self.device)
        dist.all_reduce(totals)
        global_masks = float(totals[2])
        return float(totals[0]) / global_masks, float(totals[1]) / global_masks, int(global_masks)

    def stop_requested(self, should_stop: Callable[[], bool] | None) -> bool:
        """Rank 0 asks; every rank gets the same answer, so all stop at the same step."""
        wanted = bool(should_stop()) if should_stop is not None and self.rank == 0 else False
        if self.world == 1:
            return wanted
        flag = torch.tensor([1.0 if wanted else 0.0], device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    # -- state -------------------------------------------------------------------------------

    def save(self, on_checkpoint: Callable[[Path], None] | None) -> None:
        """Rank 0 writes the state atomically (``optim.save_training_state``)."""
        if self.rank != 0:
            return
        run = {
            "masks_seen": self.run.masks_seen,
            "seconds": self.run.seconds,
            "loss_curve": [[step, loss] for step, loss in self.run.loss_curve],
        }
        config = {name: getattr(self.config, name) for name in _RESUME_FIELDS}
        save_training_state(
            self.state_path,
            self.model,
            self.optimizer,
            self.scheduler,
            self.run.step,
            capture_rng_state(),
            extra={"run": run, "config": config},
        )
        if on_checkpoint is not None:
            on_checkpoint(self.state_path)

    def resume(self) -> None:
        """Load ``state.pt`` if present: weights, optimizer, scheduler, RNG and progress."""
        if not self.state_path.exists():
            return
        payload = read_training_state(self.state_path, map_location=self.device)
        # A setting added after the state was written had its default value then.
        defaults = TrainConfig()
        saved = {name: getattr(defaults, name) for name in _RESUME_FIELDS}
        saved.update(payload.get("config", {}))
        different = {
            name: (saved[name], getattr(self.config, name))
            for name in _RESUME_FIELDS
            if saved[name] != getattr(self.config, name)
        }
        if different:
            raise ValueError(
                f"{self.state_path} was written by a run with other settings "
                f"(saved, now): {different}; use another work_dir or the same settings"
            )
        step, rng = apply_training_state(payload, self.model, self.optimizer, self.scheduler)
        restore_rng_state(rng)
        run = payload["run"]
        self.run = _Run(
            step=step,
            masks_seen=int(run["masks_seen"]),
            seconds=float(run["seconds"]),
            loss_curve=[(int(step), float(loss)) for step, loss in run["loss_curve"]],
        )


def train(
    model: Sam,
    samples: Sequence[TrainSample],
    config: TrainConfig,
    *,
    work_dir: Path,
    device: str | torch.device = "cpu",
    on_progress: Callable[[TrainProgress], None] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train `model` in place. If work_dir/"state.pt" exists, resume from it exactly
    (model, optimizer, scheduler, RNG, step). Raises ValueError for unusable data
    (no masks left after filtering, bad shapes) with a clear message.

    ``on_progress`` is called on every process after every step (with totals over all of
    them); ``on_checkpoint`` on rank 0 with the state file after each save. On return the model
    is in eval mode with its parameters' ``requires_grad`` flags as they were.
    """
    images, _ = training_images(samples, config.max_mask_fraction)
    target = select_device(device)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    flags = [param.requires_grad for param in model.parameters()]
    model.to(target)
    trainer = _Trainer(model, images, config, target, work_dir)
    try:
        trainer.resume()
        return _loop(trainer, on_progress, on_checkpoint, should_stop)
    finally:
        for param, flag in zip(model.parameters(), flags, strict=True):
            param.requires_grad_(flag)
        model.eval()


def _loop(
    trainer: _Trainer,
    on_progress: Callable[[TrainProgress], None] | None,
    on_checkpoint: Callable[[Path], None] | None,
    should_stop: Callable[[], bool] | None,
) -> TrainResult:
    config, run, model = trainer.config, trainer.run, trainer.model
    model.train()
    if trainer.frozen_encoder:
        model.image_encoder.eval()
    wrapped = trainer.loss_module
    if trainer.world > 1:
        # Parameters a step may not reach (box-corner embeddings in a step without boxes)
        # exist only when the prompt encoder trains.
        wrapped = DistributedDataParallel(
            trainer.loss_module,
            find_unused_parameters=config.scope != "decoder",
        )
    started = time.perf_counter()
    seconds_before = run.seconds
    saved_at = run.step if trainer.state_path.exists() else -1
    stopped = False
    while run.step < config.steps:
        if trainer.stop_requested(should_stop):
            stopped = True
            break
        loss, iou, masks = trainer.step(wrapped)
        run.step += 1
        run.masks_seen += masks
        run.seconds = seconds_before + time.perf_counter() - started
        run.loss_curve.append((run.step, loss))
        if on_progress is not None:
            on_progress(
                TrainProgress(run.step, config.steps, loss, iou, run.masks_seen, run.seconds)
            )
        if run.step % config.checkpoint_every == 0:
            trainer.save(on_checkpoint)
            saved_at = run.step
    if saved_at != run.step:
        trainer.save(on_checkpoint)
    return TrainResult(
        steps_done=run.step,
        stopped=stopped,
        loss_curve=list(run.loss_curve),
        masks_seen=run.masks_seen,
        seconds=run.seconds,
        masks_per_second=run.masks_seen / run.seconds if run.seconds > 0 else 0.0,
    )
