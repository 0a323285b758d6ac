"""Device and precision choices for running SAM: cpu / cuda, fp32 / bf16, optional compile.

Nothing here touches CUDA at import time: `torch.cuda` is only queried inside the functions,
so a web process or a Celery worker can import engine.sam before it forks.

    device = select_device("auto")                   # cuda when available, else cpu
    with precision_context(device, "bf16"):
        embedding = model.image_encoder(images)      # bf16 matmuls, float32 returned by caller
"""

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from engine.sam.modeling.vit_attention import VitAttention

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
# CPU flags (Linux /proc/cpuinfo) of native bf16 matrix products: x86 AVX512-BF16 or AMX, Arm
# BF16. Without them oneDNN emulates bf16 and autocast is several times slower than fp32.
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
CPUINFO = Path("/proc/cpuinfo")
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def check_precision(precision: str) -> str:
    """Return `precision` if known ("fp32" or "bf16"), else raise ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    return precision


def select_device(choice: str | torch.device = "auto") -> torch.device:
    """Resolve "auto" | "cpu" | "cuda" | "cuda:N" (or a torch.device) to a usable device.

    "auto" picks cuda when `torch.cuda.is_available()`, else cpu. Asking for cuda on a machine
    without a CUDA device raises ValueError instead of failing later inside torch.
    """
    if isinstance(choice, torch.device):
        device = choice
    elif not isinstance(choice, str):
        raise ValueError(f"device must be a string or torch.device, got {type(choice).__name__}")
    elif choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(choice)
        except RuntimeError as exc:
            raise ValueError(
                f"unknown device {choice!r}; choose one of {list(DEVICE_CHOICES)} or 'cuda:N'"
            ) from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"unsupported device {str(device)!r}; use cpu or cuda")
    if not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {str(device)!r} requested but only {torch.cuda.device_count()} "
            "CUDA device(s) exist"
        )
    return device


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The CPU feature flags the kernel reports ("flags" on x86, "Features" on Arm); empty
    where there is no /proc/cpuinfo (not Linux) or it cannot be read."""
    try:
        text = (cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def native_bf16(device: torch.device | str, *, cpuinfo: Path | None = None) -> bool:
    """Whether bf16 autocast is fast on `device`: a CUDA device with native bf16, or a CPU
    whose flags (`cpu_flags`) include AVX512-BF16, AMX-BF16 or Arm BF16. The engine benchmark
    picks bf16 by default only where this holds, and the training CLI warns when asked for bf16
    elsewhere (measured on a 2-core AVX2-only VM: a vit_tiny training step took 25 s under bf16
    autocast against 4.2 s in fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available()) and torch.cuda.is_bf16_supported(
            including_emulation=False
        )
    if device.type != "cpu":
        return False
    return bool(cpu_flags(cpuinfo) & _NATIVE_BF16_FLAGS)


def precision_context(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """A context running matmuls/convolutions in `precision` on `device`'s type.

    "fp32" is a no-op; "bf16" is `torch.autocast(device.type, dtype=torch.bfloat16)`, on the
    CPU as well as on CUDA. Softmax, LayerNorm and reductions stay float32 under autocast.
    """
    check_precision(precision)
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def compile_image_encoder(model: torch.nn.Module, *, mode: str | None = None) -> None:
    """Replace `model.image_encoder.forward` by a `torch.compile`d version (in place).

    Opt-in: compilation takes tens of seconds and needs a working C++/Triton toolchain, so it
    is only worth it for long-running GPU workers. The state dict is unchanged.
    """
    encoder = model.image_encoder
    if not isinstance(encoder, torch.nn.Module):
        raise ValueError("model has no image_encoder module to compile")
    for module in encoder.modules():
        if isinstance(module, VitAttention):  # the folded-bias SDPA kernel compiles best
            module.fold_bias = True
    encoder.forward = torch.compile(encoder.forward, mode=mode, dynamic=False)
