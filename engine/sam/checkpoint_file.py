"""A checkpoint file's bytes, read safely: what kind of file it is, whether its zip members are
intact, and the weights-only unpickler, each failure worded for the person who must act on it.

Kept apart from `engine.sam.checkpoint`, which judges what the bytes hold (keys, shapes,
architecture); this module only knows files and pickles.
"""

import pickle
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

_PICKLE_PROTOCOL_2 = b"\x80\x02"
_ZIP_MAGIC = b"PK\x03\x04"
# Big reads keep the checksum pass one sequential sweep at disk speed (a vit_h file is 2.5 GB).
_CRC_CHUNK = 16 << 20
# torch wraps the unpickler's own sentence in advice about weights_only=False and a docs link;
# where the sentence sits and which prefix it gets ("WeightsUnpickler error:" or none at all)
# changed across releases, so the sentence is found by its wording, not by its place.
_TORCH_DOCS_LINK = "Check the documentation of torch.load"
_TORCH_PREFIX = "WeightsUnpickler error:"
# Wordings (torch 2.x) of "this pickle asks for something that is not a tensor or a plain
# container": a blocked module (os, posix, subprocess...), a global outside the allowlist, an
# unknown reduce or constructor, a persistent id that is not a storage.
_REFUSAL = re.compile(
    r"unsupported global|is blocked|not an allowed global|reduce for unrecognized|"
    r"can only create new object|can only build|persistent_load|persistent id|"
    r"must be imported to load",
    re.IGNORECASE,
)


class CheckpointError(ValueError):
    """The file is not a usable SAM checkpoint; the message says why."""


def read_payload(path: Path, *, verify_members: bool) -> Any:
    """What `torch.save` stored in `path`, loaded with `weights_only=True` on the CPU.

    `verify_members`: compare every zip member with its recorded CRC-32 first (one pass over the
    file), which `torch.load` never does; callers skip it for a file whose sha256 they verified.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == _ZIP_MAGIC:
        _check_archive(path, verify_members=verify_members)
    elif not head.startswith(_PICKLE_PROTOCOL_2):
        raise CheckpointError(
            f"{path}: not a checkpoint (neither a torch zip archive nor a legacy torch pickle; "
            f"starts with {head!r})"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_failure(path, str(exc)) from exc
    except MemoryError:
        raise
    except Exception as exc:  # any other failure to parse the bytes
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint ({_failure_summary(exc)})"
        ) from exc


def _check_archive(path: Path, *, verify_members: bool) -> None:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint (zip is incomplete)")
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") for name in archive.namelist()):
                raise CheckpointError(f"{path}: not a checkpoint (a zip without a torch data.pkl)")
            if verify_members:
                _verify_members(path, archive)
    except zipfile.BadZipFile as exc:  # a central directory that does not parse
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({exc})") from exc


def _verify_members(path: Path, archive: zipfile.ZipFile) -> None:
    """Read each member to its end, which makes zipfile compare it with its CRC-32: without this
    a flipped byte inside a tensor loads silently as a different weight."""
    members = archive.infolist()
    if not any(info.CRC for info in members):
        # torch.serialization.set_crc32_options(False) writes 0 for every member: nothing to
        # compare (like a legacy pickle, which has no checksums either).
        return
    for info in members:
        try:
            with archive.open(info) as member:
                while member.read(_CRC_CHUNK):
                    pass
        except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
            reason = (
                "its bytes do not match the CRC-32 the zip records"
                if "CRC" in str(exc)
                else _failure_summary(exc)
            )
            raise CheckpointError(
                f"{path}: truncated or corrupt checkpoint (damaged zip member {info.filename}: "
                f"{reason})"
            ) from exc


def _unpickling_failure(path: Path, message: str) -> CheckpointError:
    """A refusal (the pickle asks for code or non-tensor objects) or a damaged pickle, with the
    unpickler's own sentence as the detail."""
    body = message.split(_TORCH_DOCS_LINK)[0].replace(_TORCH_PREFIX, "\n\n")
    paragraphs = [part.strip() for part in body.split("\n\n") if part.strip()]
    refusals = [part for part in paragraphs if _REFUSAL.search(part)]
    if refusals:
        detail = _first_sentence(refusals[-1]).removeprefix("Trying to load ")
        return CheckpointError(
            f"{path}: refused, the pickle would run code or build objects that are not "
            f"tensors ({detail})"
        )
    detail = _first_sentence(paragraphs[-1]) if paragraphs else ""
    return CheckpointError(
        f"{path}: truncated or corrupt checkpoint ({detail or 'the pickle does not unpickle'})"
    )


def _failure_summary(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the file ends early"
    text = _first_sentence(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_sentence(text: str) -> str:
    return text.strip().split("\n")[0].split(". ")[0].rstrip(".").strip()
