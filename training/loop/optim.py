"""What trains, how fast: parameter scopes, layer-wise lr decay, AdamW, warmup + step decay,
gradient accumulation and an exactly-resumable training state.

DESIGN.md names the recipe (AdamW, warmup, step decay, layer-wise lr decay) without numbers, so
the defaults are the SAM paper's (appendix A): lr 8e-4, betas (0.9, 0.999), weight decay 0.1 on
every parameter (the paper names no exclusions), 250 warmup steps, lr x 0.1 at 60k and 86,666 of
90k steps, layer-wise decay 0.8. Callers scale the step counts to their own run length.
"""

import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from engine.sam.modeling import Sam

Scope = Literal["decoder", "decoder+prompt", "full"]
SCOPES: tuple[Scope, ...] = ("decoder", "decoder+prompt", "full")

LR = 8e-4
BETAS = (0.9, 0.999)
WEIGHT_DECAY = 0.1
LAYER_DECAY = 0.8
WARMUP_STEPS = 250
DECAY_STEPS = (60_000, 86_666)
DECAY_FACTOR = 0.1

T = TypeVar("T")


class ParamGroup(TypedDict):
    """One optimizer group: a readable name, its parameters and its lr multiplier."""

    name: str
    params: list[nn.Parameter]
    lr_scale: float


def _encoder_depth_id(name: str, depth: int) -> int:
    """Layer id of an image-encoder parameter, MAE style: patch embed / position embedding 0,
    block i -> i + 1, neck depth + 1 (the neck sits next to the decoder, so it gets full lr)."""
    if name.startswith(("patch_embed.", "pos_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def trainable_parameters(
    model: Sam, scope: Scope, *, layer_decay: float = LAYER_DECAY
) -> list[ParamGroup]:
    """Freeze everything outside ``scope`` (requires_grad=False) and group the rest by lr scale.

    decoder: the mask decoder; decoder+prompt: plus the prompt encoder; full: plus the image
    encoder, whose block i of D gets ``layer_decay ** (D - i)``, patch embed ``** (D + 1)``.
    Groups with no parameters are left out.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {SCOPES}")
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    for param in model.parameters():
        param.requires_grad_(False)

    groups: list[ParamGroup] = [
        {"name": "mask_decoder", "params": list(model.mask_decoder.parameters()), "lr_scale": 1.0}
    ]
    if scope in ("decoder+prompt", "full"):
        groups.append(
            {
                "name": "prompt_encoder",
                "params": list(model.prompt_encoder.parameters()),
                "lr_scale": 1.0,
            }
        )
    if scope == "full":
        depth = len(model.image_encoder.blocks)
        by_id: dict[int, list[nn.Parameter]] = {}
        for name, param in model.image_encoder.named_parameters():
            by_id.setdefault(_encoder_depth_id(name, depth), []).append(param)
        for layer_id in sorted(by_id):
            groups.append(
                {
                    "name": f"image_encoder.layer{layer_id}",
                    "params": by_id[layer_id],
                    "lr_scale": layer_decay ** (depth + 1 - layer_id),
                }
            )
    groups = [group for group in groups if group["params"]]
    for group in groups:
        for param in group["params"]:
            param.requires_grad_(True)
    return groups


def build_optimizer(
    model: Sam,
    scope: Scope,
    lr: float = LR,
    *,
    weight_decay: float = WEIGHT_DECAY,
    layer_decay: float = LAYER_DECAY,
    betas: tuple[float, float] = BETAS,
) -> torch.optim.AdamW:
    """AdamW over ``trainable_parameters(model, scope)``; each group's lr is ``lr * lr_scale``."""
    groups = trainable_parameters(model, scope, layer_decay=layer_decay)
    # Extra keys ("name", "lr_scale") ride along in param_groups and in the saved state.
    param_groups: list[dict[str, Any]] = [
        {**group, "lr": lr * group["lr_scale"], "weight_decay": weight_decay} for group in groups
    ]
    return torch.optim.AdamW(param_groups, lr=lr, betas=betas, weight_decay=weight_decay)


class WarmupStepDecay:
    """lr multiplier for scheduler step s (0-based): ``(s + 1) / warmup_steps`` while
    s < warmup_steps, then 1, times ``decay_factor`` for every milestone in ``decay_steps`` <= s.

    A class rather than a closure so LambdaLR's state dict records the schedule's numbers.
    """

    def __init__(self, warmup_steps: int, decay_steps: Sequence[int], decay_factor: float) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if list(decay_steps) != sorted(decay_steps) or any(s < 0 for s in decay_steps):
            raise ValueError(f"decay_steps must be non-negative and ascending: {decay_steps}")
        if not 0.0 < decay_factor <= 1.0:
            raise ValueError(f"decay_factor must be in (0, 1], got {decay_factor}")
        self.warmup_steps = warmup_steps
        self.decay_steps = list(decay_steps)
        self.decay_factor = decay_factor

    def __call__(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        passed = sum(1 for milestone in self.decay_steps if step >= milestone)
        return warm * self.decay_factor**passed


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int = WARMUP_STEPS,
    decay_steps: Sequence[int] = DECAY_STEPS,
    decay_factor: float = DECAY_FACTOR,
) -> LambdaLR:
    """Linear warmup then step decay; call ``scheduler.step()`` once per optimizer step."""
    return LambdaLR(optimizer, WarmupStepDecay(warmup_steps, decay_steps, decay_factor))


def accumulate(
    loss_fn: Callable[[T], Tensor], micro_batches: Iterable[T], sizes: Sequence[int]
) -> float:
    """Backpropagate k micro-batches so the gradients equal one batch of ``sum(sizes)``.

    ``loss_fn`` must return the *mean* loss over its micro-batch (a scalar); each is weighted by
    its share of the samples, so uneven micro-batches still give the full-batch mean. Gradients
    add onto whatever ``.grad`` holds (zero them first). Returns the full-batch mean loss.
    """
    total = sum(sizes)
    if total <= 0:
        raise ValueError("sizes must add up to a positive number of samples")
    seen = 0
    loss_sum = 0.0
    for batch, size in zip(micro_batches, sizes, strict=True):
        loss = loss_fn(batch) * (size / total)
        loss.backward()  # frees this micro-batch's graph before the next one is built
        loss_sum += float(loss.detach())
        seen += 1
    if seen == 0:
        raise ValueError("no micro-batches")
    return loss_sum


def capture_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Torch (CPU and CUDA), NumPy and Python RNG states, plus ``generator``'s if given, as
    tensors / plain values only so ``torch.load(weights_only=True)`` can read them back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Undo ``capture_rng_state``: set the global RNGs and, if given, ``generator``."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].cpu().numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    # weights_only loading may hand tuples back as lists; random.setstate insists on tuples.
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None:
        if "generator" not in state:
            raise ValueError("the saved state holds no generator state")
        generator.set_state(state["generator"])


def save_training_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    step: int,
    rng_state: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write everything a run needs to continue bit-for-bit; written to a temporary file and
    renamed so a crash mid-write never leaves a truncated checkpoint at ``path``. ``extra``:
    more top-level entries (plain values and tensors) the caller wants back."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    payload = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state,
        **(extra or {}),
    }
    torch.save(payload, tmp)
    tmp.replace(target)


def load_training_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    *,
    map_location: str | torch.device | None = None,
) -> tuple[int, dict[str, Any]]:
    """Load a ``save_training_state`` file into freshly built objects (same scope and schedule)
    -> (step, rng_state); pass rng_state to ``restore_rng_state``."""
    payload = read_training_state(path, map_location=map_location)
    return apply_training_state(payload, model, optimizer, scheduler)


def read_training_state(
    path: str | Path, *, map_location: str | torch.device | None = None
) -> dict[str, Any]:
    """The payload of a ``save_training_state`` file (safe loading: tensors and plain values)."""
    payload: dict[str, Any] = torch.load(Path(path), map_location=map_location, weights_only=True)
    return payload


def apply_training_state(
    payload: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
) -> tuple[int, dict[str, Any]]:
    """Load a read payload into the objects -> (step, rng_state), as ``load_training_state``."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    return int(payload["step"]), payload["rng"]
