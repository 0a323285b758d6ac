"""Checkpoint io: official `sam_vit_*.pth` state dicts unchanged, and our own tagged format.

Everything is read with `torch.load(..., map_location="cpu", weights_only=True)`: a pickle that
would import or call anything but tensors and plain containers is refused before it runs.
Keys are strict; shapes are compared against the architecture before any weight is copied.

Our format is a dict {"format": "maskloop-sam/1", "arch", "config", "state_dict"}; its sha256
(of the file's bytes) is verified when the caller passes the expected value. Its "arch" label
must be a known architecture and agree with the weights when they are of a known size.

A file read without an expected sha256 (an import) is checked in full: zip members against
their CRC-32, weights for NaN or infinity. The bytes themselves are read by
`engine.sam.checkpoint_file`.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from engine.sam.build import build_sam_from_config
from engine.sam.checkpoint_file import CheckpointError as CheckpointError
from engine.sam.checkpoint_file import read_payload
from engine.sam.config import CONFIGS, SamConfig
from engine.sam.modeling import ImageEncoderViT, Sam

OUR_FORMAT = "maskloop-sam/1"
PATCH_KEY = "image_encoder.patch_embed.proj.weight"
NECK_KEY = "image_encoder.neck.0.weight"
BLOCK_PREFIX = "image_encoder.blocks."
ENCODER_PREFIX = "image_encoder."
_LIST_LIMIT = 20
_FINITE_LIMIT = 5


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read from disk: weights, the architecture they fit, and where from."""

    state_dict: dict[str, Tensor]
    arch: str
    config: SamConfig
    is_official: bool


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _as_state_dict(payload: Any, path: Path) -> dict[str, Tensor]:
    if not isinstance(payload, dict) or not payload:
        raise CheckpointError(f"{path}: not a state dict (got {type(payload).__name__})")
    bad = [key for key, value in payload.items() if not isinstance(value, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict, non-tensor entries {_listed(bad)}")
    return {str(key): value for key, value in payload.items()}


def _listed(keys: list[str]) -> str:
    shown = ", ".join(sorted(keys)[:_LIST_LIMIT])
    more = len(keys) - _LIST_LIMIT
    return f"[{shown}{f', ... {more} more' if more > 0 else ''}]"


def encoder_size(state_dict: dict[str, Tensor]) -> tuple[int, int]:
    """(width, depth) of the image encoder the weights are for."""
    if PATCH_KEY not in state_dict:
        raise CheckpointError(f"not a SAM state dict: no {PATCH_KEY!r}")
    blocks = {
        int(key[len(BLOCK_PREFIX) :].split(".", 1)[0])
        for key in state_dict
        if key.startswith(BLOCK_PREFIX)
    }
    return int(state_dict[PATCH_KEY].shape[0]), max(blocks) + 1 if blocks else 0


def detect_arch(state_dict: dict[str, Tensor]) -> str:
    """The registered architecture whose encoder width and depth match the weights."""
    embed_dim, depth = encoder_size(state_dict)
    out_chans = int(state_dict[NECK_KEY].shape[0]) if NECK_KEY in state_dict else None
    for name, config in CONFIGS.items():
        if (
            config.encoder_embed_dim == embed_dim
            and config.encoder_depth == depth
            and out_chans in (None, config.prompt_embed_dim)
        ):
            return name
    known = {n: (c.encoder_embed_dim, c.encoder_depth) for n, c in CONFIGS.items()}
    raise CheckpointError(
        f"no known SAM architecture has encoder width {embed_dim} and depth {depth} "
        f"(known (width, depth): {known})"
    )


def check_state_dict(state_dict: dict[str, Tensor], config: SamConfig) -> None:
    """Raise CheckpointError listing missing/unexpected keys or the first shape mismatches."""
    expected = build_sam_from_config(config, device="meta").state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_listed(unexpected)}")
        raise CheckpointError("state dict does not match the architecture: " + "; ".join(parts))
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if state_dict[key].shape != tensor.shape
    ]
    if mismatched:
        raise CheckpointError("shape mismatch: " + "; ".join(mismatched[:_LIST_LIMIT]))


def check_finite(state_dict: dict[str, Tensor]) -> None:
    """Raise CheckpointError naming the floating tensors that hold NaN or infinity (a diverged
    training run writes them; every mask decoded from them would be garbage)."""
    bad: list[str] = []
    for key, value in state_dict.items():
        if not value.is_floating_point() or bool(torch.isfinite(value).all()):
            continue
        count = value.numel() - int(torch.isfinite(value).sum())
        bad.append(f"{key} ({count} of {value.numel()} values)")
    if bad:
        shown = "; ".join(bad[:_FINITE_LIMIT])
        more = f"; ... {len(bad) - _FINITE_LIMIT} more tensors" if len(bad) > _FINITE_LIMIT else ""
        raise CheckpointError(f"non-finite weights (NaN or infinity) in {shown}{more}")


def read_checkpoint(
    path: str | Path, *, arch: str | None = None, expected_sha256: str | None = None
) -> LoadedCheckpoint:
    """Read and validate a checkpoint without building the model.

    `arch` (if given) must agree with what the weights are; `expected_sha256` (if given) must
    equal the file's sha256. Without `expected_sha256` the file is checked in full: its zip
    members against their CRC-32 and its weights for NaN or infinity. A matching sha256 names
    bytes that passed those checks when they were imported, so they are not repeated.
    """
    path = Path(path)
    verified = False
    if expected_sha256 is not None:
        actual = file_sha256(path) if path.is_file() else None
        if actual is not None and actual != expected_sha256.lower():
            raise CheckpointError(
                f"{path}: sha256 {actual} does not match the expected {expected_sha256}"
            )
        verified = actual is not None
    payload = read_payload(path, verify_members=not verified)
    if isinstance(payload, dict) and payload.get("format") == OUR_FORMAT:
        loaded = _read_ours(payload, path, arch)
    else:
        loaded = _read_official(payload, path, arch)
    if not verified:
        try:
            check_finite(loaded.state_dict)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    return loaded


def _read_ours(payload: dict[str, Any], path: Path, arch: str | None) -> LoadedCheckpoint:
    try:
        config = SamConfig.from_dict(payload["config"])
        label = str(payload["arch"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed {OUR_FORMAT} header ({exc})") from exc
    state_dict = _as_state_dict(payload.get("state_dict"), path)
    _check_label(label, state_dict, path)
    if arch is not None and arch != label:
        raise CheckpointError(f"{path}: checkpoint is {label}, not {arch}")
    check_state_dict(state_dict, config)
    return LoadedCheckpoint(state_dict, label, config, is_official=False)


def _check_label(label: str, state_dict: dict[str, Tensor], path: Path) -> None:
    """Our header's "arch" becomes the version's architecture, so it must be a known one and
    must not contradict the weights. Weights of no known size (a `train_cli --set` model) keep
    their label: it names the architecture they were derived from."""
    if label not in CONFIGS:
        raise CheckpointError(
            f"{path}: labelled {label!r}, which is not a known architecture "
            f"(known: {sorted(CONFIGS)})"
        )
    try:
        detected = detect_arch(state_dict)
    except CheckpointError:
        return  # no known size, or not SAM at all: check_state_dict says what differs
    if detected != label:
        width, depth = encoder_size(state_dict)
        raise CheckpointError(
            f"{path}: labelled {label} but its weights are {detected}'s "
            f"(encoder width {width}, depth {depth})"
        )


def _read_official(payload: Any, path: Path, arch: str | None) -> LoadedCheckpoint:
    state_dict = _as_state_dict(payload, path)
    if arch is not None and arch not in CONFIGS:
        raise CheckpointError(f"unknown architecture {arch!r}; known: {sorted(CONFIGS)}")
    try:
        detected = detect_arch(state_dict)
    except CheckpointError:
        if arch is None:
            raise
        detected = arch  # let the key/shape check say precisely what differs
    if arch is not None and arch != detected:
        raise CheckpointError(f"{path}: checkpoint is {detected}, not {arch}")
    config = CONFIGS[detected]
    check_state_dict(state_dict, config)
    return LoadedCheckpoint(state_dict, detected, config, is_official=True)


class EncoderNotLoaded(nn.Module):
    """The image encoder's place in a decoder-only `Sam` (web processes decode against stored
    embeddings and never hold the encoder's weights, 90% of the checkpoint)."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError(
            "this model was loaded decoder-only (without its image encoder): set a stored "
            "embedding with SamPredictor.set_embedding instead of set_image"
        )


def sam_from_state_dict(
    state_dict: dict[str, Tensor], config: SamConfig, *, decoder_only: bool = False
) -> Sam:
    """A float32 eval-mode `Sam` holding exactly these weights (strict keys).

    `decoder_only`: keep only the prompt encoder and mask decoder; the image encoder is an
    `EncoderNotLoaded` placeholder (its weights were still checked, then dropped).
    """
    check_state_dict(state_dict, config)
    sam = build_sam_from_config(config, device="meta")
    weights = {
        key: value.float() if value.is_floating_point() else value
        for key, value in state_dict.items()
        if not (decoder_only and key.startswith(ENCODER_PREFIX))
    }
    if decoder_only:
        sam.image_encoder = cast(ImageEncoderViT, EncoderNotLoaded(config.image_size))
    sam.load_state_dict(weights, strict=True, assign=True)
    sam.reset_pixel_stats()
    return sam.eval()


def load_sam(
    path: str | Path,
    *,
    arch: str | None = None,
    expected_sha256: str | None = None,
    decoder_only: bool = False,
) -> Sam:
    """Build the model stored at `path` (official or ours), arch detected when not given."""
    loaded = read_checkpoint(path, arch=arch, expected_sha256=expected_sha256)
    return sam_from_state_dict(loaded.state_dict, loaded.config, decoder_only=decoder_only)


def save_sam(sam: Sam, path: str | Path, *, arch: str, config: SamConfig) -> str:
    """Write `sam` in our format; returns the file's sha256 (to store beside it)."""
    state_dict = {key: value.detach().cpu() for key, value in sam.state_dict().items()}
    check_state_dict(state_dict, config)
    payload = {
        "format": OUR_FORMAT,
        "arch": arch,
        "config": config.to_dict(),
        "state_dict": state_dict,
    }
    torch.save(payload, path)
    return file_sha256(path)
