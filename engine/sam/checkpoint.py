"""Checkpoint io: official `sam_vit_*.pth` state dicts unchanged, and our own tagged format.

Everything is read with `torch.load(..., map_location="cpu", weights_only=True)`: a pickle that
would import or call anything but tensors and plain containers is refused before it runs.
Keys are strict; shapes are compared against the architecture before any weight is copied.

Our format is a dict {"format": "maskloop-sam/1", "arch", "config", "state_dict"}; its sha256
(of the file's bytes) is verified when the caller passes the expected value.
"""

import hashlib
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from engine.sam.build import build_sam_from_config
from engine.sam.config import CONFIGS, SamConfig
from engine.sam.modeling import ImageEncoderViT, Sam

OUR_FORMAT = "maskloop-sam/1"
PATCH_KEY = "image_encoder.patch_embed.proj.weight"
NECK_KEY = "image_encoder.neck.0.weight"
BLOCK_PREFIX = "image_encoder.blocks."
ENCODER_PREFIX = "image_encoder."
_PICKLE_PROTOCOL_2 = b"\x80\x02"
_ZIP_MAGIC = b"PK\x03\x04"
_LIST_LIMIT = 20


class CheckpointError(ValueError):
    """The file is not a usable SAM checkpoint; the message says why."""


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


def _read_payload(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint (zip is incomplete)")
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") for name in archive.namelist()):
                raise CheckpointError(f"{path}: not a checkpoint (a zip without a torch data.pkl)")
    elif not head.startswith(_PICKLE_PROTOCOL_2):
        raise CheckpointError(
            f"{path}: not a checkpoint (neither a torch zip archive nor a legacy torch pickle; "
            f"starts with {head!r})"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("WeightsUnpickler error:")[-1].strip().split(". ")[0]
        if "WeightsUnpickler error: Unsupported" in str(exc) or "persistent_load" in detail:
            raise CheckpointError(
                f"{path}: refused, the pickle would run code or build objects that are not "
                f"tensors ({detail})"
            ) from exc
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({detail})") from exc
    except MemoryError:
        raise
    except Exception as exc:  # any other failure to parse the bytes
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({exc!r})") from exc


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


def detect_arch(state_dict: dict[str, Tensor]) -> str:
    """The registered architecture whose encoder width and depth match the weights."""
    if PATCH_KEY not in state_dict:
        raise CheckpointError(f"not a SAM state dict: no {PATCH_KEY!r}")
    embed_dim = int(state_dict[PATCH_KEY].shape[0])
    blocks = {
        int(key[len(BLOCK_PREFIX) :].split(".", 1)[0])
        for key in state_dict
        if key.startswith(BLOCK_PREFIX)
    }
    depth = max(blocks) + 1 if blocks else 0
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


def read_checkpoint(
    path: str | Path, *, arch: str | None = None, expected_sha256: str | None = None
) -> LoadedCheckpoint:
    """Read and validate a checkpoint without building the model.

    `arch` (if given) must agree with what the weights are; `expected_sha256` (if given) must
    equal the file's sha256.
    """
    path = Path(path)
    if expected_sha256 is not None:
        actual = file_sha256(path) if path.is_file() else None
        if actual is not None and actual != expected_sha256.lower():
            raise CheckpointError(
                f"{path}: sha256 {actual} does not match the expected {expected_sha256}"
            )
    payload = _read_payload(path)
    if isinstance(payload, dict) and payload.get("format") == OUR_FORMAT:
        try:
            config = SamConfig.from_dict(payload["config"])
            stored_arch = str(payload["arch"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: malformed {OUR_FORMAT} header ({exc})") from exc
        state_dict = _as_state_dict(payload.get("state_dict"), path)
        if arch is not None and arch != stored_arch:
            raise CheckpointError(f"{path}: checkpoint is {stored_arch}, not {arch}")
        check_state_dict(state_dict, config)
        return LoadedCheckpoint(state_dict, stored_arch, config, is_official=False)

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
