"""``mask_ref``: a decoded candidate's low-res logits, kept so that the next click can feed them
back as ``mask_input`` (as the official tool does with its previous mask).

Each decode stores its C candidates' 256 x 256 logits (float16, ~0.4 MiB for three) in
``caches["default"]``, bound to (user, image, model version), for ``MASKLOOP_MASK_REF_SECONDS``;
candidate ``i`` is ``<slot>_<token>.<i>``. The shared cache is what makes a ref made by one web
process usable by the next (gunicorn workers, several machines on Redis).

A user's refs live in a ring of ``MASKLOOP_MASK_REFS_PER_USER`` slots (a per-user counter picks
the slot; each decode overwrites the oldest): the tool only ever sends back the ref of one of
the last decodes (the previous click, or an earlier one after undo), and a ref per decode kept
for its whole expiry would grow without bound (20 annotators clicking every 2 s: ~7 GiB of
Redis at the 30-minute default). So the cache holds at most slots x users entries; an
overwritten ref answers ``invalid_mask_ref``, on which the tool decodes without it.

Every process also keeps the last ``RECENT_REFS`` entries it wrote in memory, with the same
expiry: an annotator's next click usually reaches the process that answered the previous one
(one keep-alive connection), and reading the ref back from memory saves unpickling ~0.4 MiB
from a file or Redis on the click path. The memory copy is only a front: every entry is
written to the shared cache first, so a process that never saw it still finds it there.
"""

import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import caches

from annotation.errors import DomainError
from annotation.models import Image
from engine.models import ModelVersion

# <slot>_<token>.<candidate>: the leading digits end at the first "_" (the token may hold more).
_REF = re.compile(r"^(\d{1,4})_([A-Za-z0-9_-]{20,64})\.(\d)$")
_CACHE_PREFIX = "mask-ref:"
_COUNTER_PREFIX = "mask-ref-count:"
RECENT_REFS = 32  # x ~0.4 MiB (three candidates) per process


class InvalidMaskRef(DomainError):
    """A mask_ref that is unknown, expired, or was made for another user, image or version."""

    code = "invalid_mask_ref"


Owner = tuple[int, int, int]  # (user, image, model version) primary keys


@dataclass(frozen=True)
class _Kept:
    owner: Owner
    logits: np.ndarray  # C x 256 x 256 float16, read-only
    expires: float  # time.monotonic()


_recent: "OrderedDict[str, _Kept]" = OrderedDict()
_recent_lock = threading.Lock()


def _owner(user: User, image: Image, version: ModelVersion) -> Owner:
    return (int(user.pk), int(image.pk), int(version.pk))


def _remember(token: str, kept: _Kept) -> None:
    with _recent_lock:
        _recent[token] = kept
        _recent.move_to_end(token)
        while len(_recent) > RECENT_REFS:
            _recent.popitem(last=False)


def _recall(token: str) -> _Kept | None:
    with _recent_lock:
        kept = _recent.get(token)
        if kept is not None and kept.expires <= time.monotonic():
            del _recent[token]
            return None
        return kept


def _slots() -> int:
    # At most 4 digits: the slot is part of the ref, whose pattern (_REF) allows no more.
    return min(9999, max(1, int(settings.MASKLOOP_MASK_REFS_PER_USER)))


def _entry_key(user_id: int, slot: int) -> str:
    return f"{_CACHE_PREFIX}{user_id}:{slot}"


def _next_slot(user_id: int) -> int:
    """The user's next ring slot. The counter is atomic on Redis; on the file cache two decodes
    of one user at the same instant may share a slot (the earlier ref is then refused, and the
    tool decodes without it), and Django's ``incr`` there rewrites the counter with the cache's
    default timeout, so an idle user's count restarts (the ring just starts over)."""
    cache = caches["default"]
    key = f"{_COUNTER_PREFIX}{user_id}"
    try:
        count = cache.incr(key)
    except ValueError:  # first decode of this user (or the cache was cleared)
        cache.add(key, 0, timeout=None)  # a few bytes per user (kept on Redis)
        count = cache.incr(key)
    return int(count) % _slots()


def mask_refs_store(
    *, user: User, image: Image, model_version: ModelVersion, low_res: np.ndarray
) -> list[str]:
    """Keep C x 256 x 256 logits; return one ref per candidate (``<slot>_<token>.<index>``)."""
    token = secrets.token_urlsafe(24)
    logits = np.ascontiguousarray(low_res, dtype=np.float16)
    owner = _owner(user, image, model_version)
    seconds = int(settings.MASKLOOP_MASK_REF_SECONDS)
    slot = _next_slot(int(user.pk))
    caches["default"].set(
        _entry_key(int(user.pk), slot),
        {"token": token, "owner": owner, "shape": list(logits.shape), "logits": logits.tobytes()},
        timeout=seconds,
    )
    logits.flags.writeable = False  # shared by the requests that read it back
    _remember(token, _Kept(owner, logits, time.monotonic() + seconds))
    return [f"{slot}_{token}.{index}" for index in range(logits.shape[0])]


def mask_ref_load(*, ref: str, user: User, image: Image, model_version: ModelVersion) -> np.ndarray:
    """The 1 x 256 x 256 float32 logits behind ``ref``; InvalidMaskRef unless the ref is this
    user's, for this image and version, and still kept."""
    match = _REF.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise InvalidMaskRef("mask_ref is not a reference this server handed out")
    slot, token, index = int(match.group(1)), match.group(2), int(match.group(3))
    kept = _recall(token)
    if kept is None:
        # Only this user's ring is looked at: another user's ref is simply not found there.
        stored = caches["default"].get(_entry_key(int(user.pk), slot))
        if not isinstance(stored, dict) or stored.get("token") != token:
            raise InvalidMaskRef("mask_ref is unknown or expired: decode again without it")
        logits = np.frombuffer(stored["logits"], dtype=np.float16).reshape(stored["shape"])
        kept = _Kept(tuple(stored["owner"]), logits, float("inf"))
    if index >= kept.logits.shape[0]:
        raise InvalidMaskRef("mask_ref is unknown or expired: decode again without it")
    if kept.owner != _owner(user, image, model_version):
        # One message for every mismatch: a ref reveals nothing about what it belongs to.
        raise InvalidMaskRef("mask_ref belongs to another user, image or model version")
    return kept.logits[index : index + 1].astype(np.float32)


def mask_refs_forget_recent() -> None:
    """Drop this process's in-memory copies (tests; the shared cache keeps every ref)."""
    with _recent_lock:
        _recent.clear()
