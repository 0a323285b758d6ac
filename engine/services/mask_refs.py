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
from a file or Redis on the click path.

The shared cache is written on a small pool of writer threads, off the click's path: the
slot counter (once every ``SLOT_BLOCK`` decodes) while the decoder runs, the ~0.4 MiB entry
behind the answer (together ~1.6 ms of a click on the file cache when they ran on the request
thread), once the response has been sent when the API asked for it
(:func:`mask_ref_writes_after_response`). The memory copy is made first, so the process that
answered always has the ref; another process asked for it before the write lands looks again
for up to ``PENDING_WRITE_GRACE_SECONDS``. A worker killed
between its answer and the write loses that ref: the next click answers ``invalid_mask_ref``
and the tool decodes without it, as for any overwritten ref.
"""

import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.signals import request_finished

from annotation.errors import DomainError
from annotation.models import Image
from engine.models import ModelVersion
from engine.services.process_pool import ProcessThreadPool

# <slot>_<token>.<candidate>: the leading digits end at the first "_" (the token may hold more).
_REF = re.compile(r"^(\d{1,4})_([A-Za-z0-9_-]{20,64})\.(\d)$")
logger = logging.getLogger(__name__)

_CACHE_PREFIX = "mask-ref:"
_COUNTER_PREFIX = "mask-ref-count:"
RECENT_REFS = 32  # x ~0.4 MiB (three candidates) per process
# A decode answers before its refs' shared cache write lands (PendingRefs.store): a process that
# did not make a ref may look for it a moment too early, so a miss is looked at again this long.
PENDING_WRITE_GRACE_SECONDS = 0.05
_RETRY_PAUSE_SECONDS = 0.004


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


# Ring positions are taken from the shared counter SLOT_BLOCK at a time, per process and user:
# one cache round trip per SLOT_BLOCK decodes. On the file cache that round trip (~1.8 ms)
# ran beside every decode; without it the server's decoder call went from 0.2-1.1 ms slower
# than the bench's bare call to 1.2-2.9 ms faster (bench/decode_latency.py, one A/B). Counts a
# process reserved but did not use are skipped, so with several processes serving one user a
# ref can be overwritten up to SLOT_BLOCK - 1 decodes early.
SLOT_BLOCK = 4
_reserved: dict[int, tuple[int, int]] = {}  # user id -> (next count, last count) reserved here
_reserved_lock = threading.Lock()


def _reserved_slot(user_id: int) -> int | None:
    """The user's next ring slot from this process's reservation, or None when it is used up."""
    with _reserved_lock:
        count, last = _reserved.get(user_id, (1, 0))
        if count > last:
            return None
        _reserved[user_id] = (count + 1, last)
    return count % _slots()


def _reserve_slots(user_id: int) -> int:
    """Reserve the user's next SLOT_BLOCK counts from the shared counter; the first one's slot.
    The counter is atomic on Redis; on the file cache two processes reserving for one user at
    the same instant may share counts (a ref is then refused, and the tool decodes without
    it), and Django's ``incr`` there rewrites the counter with the cache's default timeout, so
    an idle user's count restarts (the ring just starts over)."""
    cache = caches["default"]
    key = f"{_COUNTER_PREFIX}{user_id}"
    try:
        last = cache.incr(key, SLOT_BLOCK)
    except ValueError:  # first decode of this user (or the cache was cleared)
        cache.add(key, 0, timeout=None)  # a few bytes per user (kept on Redis)
        last = cache.incr(key, SLOT_BLOCK)
    first = int(last) - SLOT_BLOCK + 1
    with _reserved_lock:
        _reserved[user_id] = (first + 1, int(last))
    return first % _slots()


def _write_entry(user_id: int, slot: int, entry: dict[str, object], seconds: int) -> None:
    try:
        caches["default"].set(_entry_key(user_id, slot), entry, timeout=seconds)
    except Exception:  # the answer is gone: the ref is only in this process's memory now
        logger.exception("mask_ref for user %s could not be written to the shared cache", user_id)


# The slot counter (while the decoder runs) and the entries (behind the answer) are written on
# these threads, off the request thread.
_writers = ProcessThreadPool(workers=4, name="maskloop-refs")
_pending: "set[Future[None]]" = set()
_pending_lock = threading.Lock()


def _write_behind(user_id: int, slot: int, entry: dict[str, object], seconds: int) -> None:
    """Write the entry on a writer thread, or hold it until the response is closed when this
    thread's request asked for that (:func:`mask_ref_writes_after_response`)."""
    held = getattr(_after_response, "held", None)
    if held is not None:
        held.append((user_id, slot, entry, seconds))
        return
    write = _writers.get().submit(_write_entry, user_id, slot, entry, seconds)
    with _pending_lock:
        _pending.add(write)
    write.add_done_callback(_written)


def _written(write: "Future[None]") -> None:
    with _pending_lock:
        _pending.discard(write)


# A request that asks for it (mask_ref_writes_after_response) holds its entries until its
# response is closed, after the server sent it: started at once, the write (~1 ms of CPU on
# the file cache) took the GIL from the answer's RLE and JSON.
_after_response = threading.local()


def mask_ref_writes_after_response() -> None:
    """Hold the entries this thread stores until the current request's response is closed
    (Django's ``request_finished``), then write them behind it."""
    _release_held()  # a request that never finished must not keep its refs from the cache
    _after_response.held = []


def _release_held(**_: object) -> None:
    held: list[tuple[int, int, dict[str, object], int]] | None = getattr(
        _after_response, "held", None
    )
    _after_response.held = None
    for user_id, slot, entry, seconds in held or ():
        _write_behind(user_id, slot, entry, seconds)


request_finished.connect(_release_held, dispatch_uid="maskloop-mask-ref-writes")


def mask_refs_flush() -> None:
    """Wait until every ref this process answered is in the shared cache (tests; at exit the
    writer threads finish their queue anyway)."""
    with _pending_lock:
        writes = list(_pending)
    for write in writes:
        write.result()


class PendingRefs:
    """The refs of one decode: :func:`mask_refs_begin` takes the ring slot (from this process's
    reservation, or reserving more on a writer thread while the decoder runs); :meth:`store`
    keeps the logits and writes them behind the answer."""

    def __init__(self, *, user: User, image: Image, model_version: ModelVersion) -> None:
        self._user_id = int(user.pk)
        self._owner = _owner(user, image, model_version)
        reserved = _reserved_slot(self._user_id)
        self._slot: Future[int] | int = (
            reserved
            if reserved is not None
            else _writers.get().submit(_reserve_slots, self._user_id)
        )

    def store(self, low_res: np.ndarray) -> list[str]:
        """Keep C x 256 x 256 logits (float16; others are converted, which numpy does slowly:
        0.7 ms for three candidates): in this process's memory at once, in the shared cache
        behind the answer (see :func:`mask_ref_load`). One ref per candidate,
        ``<slot>_<token>.<index>``."""
        token = secrets.token_urlsafe(24)
        logits = np.ascontiguousarray(low_res, dtype=np.float16)  # no copy when float16
        logits.flags.writeable = False  # shared by the requests that read it back
        seconds = int(settings.MASKLOOP_MASK_REF_SECONDS)
        _remember(token, _Kept(self._owner, logits, time.monotonic() + seconds))
        slot = self._slot if isinstance(self._slot, int) else self._slot.result()
        entry: dict[str, object] = {
            "token": token,
            "owner": self._owner,
            "shape": list(logits.shape),
            "logits": logits.tobytes(),
        }
        _write_behind(self._user_id, slot, entry, seconds)
        return [f"{slot}_{token}.{index}" for index in range(logits.shape[0])]


def mask_refs_begin(*, user: User, image: Image, model_version: ModelVersion) -> PendingRefs:
    """Start the refs of a decode about to run: its ring slot is taken meanwhile."""
    return PendingRefs(user=user, image=image, model_version=model_version)


def _shared_entry(user_id: int, slot: int, token: str) -> dict[str, Any] | None:
    """The shared cache's entry for ``token`` in the user's ring slot, looked at again for
    about PENDING_WRITE_GRACE_SECONDS when a write may still be on its way; None if absent."""
    attempts = max(1, round(PENDING_WRITE_GRACE_SECONDS / _RETRY_PAUSE_SECONDS))
    for attempt in range(attempts + 1):
        if attempt:
            time.sleep(_RETRY_PAUSE_SECONDS)
        stored = caches["default"].get(_entry_key(user_id, slot))
        if isinstance(stored, dict) and stored.get("token") == token:
            return stored
    return None


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
        stored = _shared_entry(int(user.pk), slot, token)
        if stored is None:
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
    """Drop this process's in-memory copies and reserved ring slots (tests; the shared cache
    keeps every ref)."""
    with _recent_lock:
        _recent.clear()
    with _reserved_lock:
        _reserved.clear()
