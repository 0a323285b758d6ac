"""What a training run is asked to do and what it reports: ``TrainConfig`` (settings,
validated on construction), ``TrainProgress`` (after every step) and ``TrainResult`` (at the
end). The driver itself is ``training.loop.trainer.train``, which re-exports these names."""

from dataclasses import dataclass

from training.loop.optim import SCOPES


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how; schedule numbers are in optimizer steps (see ``optim``)."""

    steps: int = 200
    scope: str = "decoder"  # "decoder" | "decoder+prompt" | "full"
    lr: float = 1e-4
    weight_decay: float = 0.1
    layer_decay: float = 0.8
    warmup_steps: int = 0
    decay_steps: tuple[int, ...] = ()
    decay_factor: float = 0.1
    images_per_step: int = 1
    masks_per_image: int = 16
    accumulate: int = 1
    iterations: int = 11
    max_mask_fraction: float = 0.9  # GT masks covering more of the image are dropped
    # Side of the square input-frame grid the ground truth, the losses and the error-region
    # points are computed at (the low-res logits are upsampled bilinearly to it); 0 means the
    # decoder's low-res side (256 for a 1024 input). Must divide the input size. At 256 a
    # cell is 2.5 pixels of a 640-wide image, too coarse for thin parts: a model matching that
    # target perfectly reaches IoU 0.9 on only about half of domain B's masks (see
    # docs/retraining.md); 512 lifts that ceiling at 4x the loss pixels.
    loss_side: int = 0
    # bf16 autocast: on CUDA, and on CPUs with native bf16 matmuls (AMX / AVX512-BF16), where
    # it roughly halves the step time; elsewhere on CPU it is emulated and slower.
    bf16: bool = False
    # Each slot's image and masks turned by one of the 8 exact symmetries of the pixel grid
    # (rotations by 90 degrees, with or without a mirror), drawn per slot from the seed: few
    # annotated images (a round's snapshot) look like eight times as many. Full scope only.
    augment: bool = False
    seed: int = 0
    checkpoint_every: int = 50  # steps between resumable state saves

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; expected one of {SCOPES}")
        positive = ("steps", "images_per_step", "masks_per_image", "accumulate", "iterations")
        if isinstance(self.loss_side, bool) or not isinstance(self.loss_side, int):
            raise ValueError(f"loss_side must be an integer, got {self.loss_side!r}")
        if self.loss_side < 0:
            raise ValueError(
                f"loss_side must be 0 (the low-res side) or more, got {self.loss_side}"
            )
        for name in (*positive, "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 < self.max_mask_fraction <= 1.0:
            raise ValueError(f"max_mask_fraction must be in (0, 1], got {self.max_mask_fraction}")
        if not self.lr > 0.0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if self.augment and self.scope != "full":
            raise ValueError(
                "augment needs scope 'full': with a frozen encoder every turned image would "
                "need an embedding of its own"
            )


@dataclass(frozen=True)
class TrainProgress:
    """After an optimizer step: loss and ``iou`` (mean actual IoU of the last iteration) of that
    step over all processes; masks_seen and seconds since the run began (resumes included)."""

    step: int
    total_steps: int
    loss: float
    iou: float
    masks_seen: int
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """steps_done counts resumed steps too; stopped: should_stop() returned True."""

    steps_done: int
    stopped: bool
    loss_curve: list[tuple[int, float]]
    masks_seen: int
    seconds: float
    masks_per_second: float
