"""The default Django cache of a single machine: Django's file cache, without compression, and
with a cheaper, oldest-first cull.

What this cache mostly holds is the server decoder's ``mask_ref`` entries: ~0.4 MiB of float16
logits each, written on every click (``engine.services.decode``). Django's ``FileBasedCache``
zlib-compresses every value at level 6, which on those bytes took 5-10 ms per decode on a
2-core machine for an 8 % smaller file (and 2 ms more to read it back). Here values are
written as zlib "stored" blocks (level 0): no search for matches, only framing and a checksum,
so the files stay readable by Django's own class (and the other way round) and a cache folder
can be shared by processes of either.

Django's cull also lists the whole folder on every ``set`` and, past ``MAX_ENTRIES``, deletes a
random third of the entries: the ref an annotator is about to send back is as likely to go as
one from an hour ago (the next click then fails with ``invalid_mask_ref``). Here the folder is
listed at most once per ``CULL_INTERVAL_SECONDS`` per cache object, and a cull deletes expired
entries first, then the least recently written. ``MAX_ENTRIES`` stays a soft limit, as in
Django (a few entries more between two checks).
"""

import os
import pickle
import time
import zlib
from typing import IO, Any

from django.core.cache.backends.filebased import FileBasedCache

CULL_INTERVAL_SECONDS = 1.0


# _list_cache_files, _delete, _is_expired and _key_to_file are FileBasedCache's own helpers;
# django-stubs does not declare them.
class UncompressedFileBasedCache(FileBasedCache):
    """``FileBasedCache`` that stores values uncompressed (zlib level 0, same file format) and
    culls the oldest entries, not random ones."""

    _last_cull = float("-inf")

    def _write_content(self, file: IO[bytes], timeout: Any, value: Any) -> None:
        # The parent's layout: the pickled expiry, then the zlib stream of the pickled value.
        expiry = self.get_backend_timeout(timeout)
        file.write(pickle.dumps(expiry, self.pickle_protocol))
        file.write(zlib.compress(pickle.dumps(value, self.pickle_protocol), 0))

    def _cull(self) -> None:
        now = time.monotonic()
        if now - self._last_cull < CULL_INTERVAL_SECONDS:
            return
        self._last_cull = now
        names: list[str] = self._list_cache_files()  # type: ignore[attr-defined]
        if len(names) < self._max_entries:
            return
        if self._cull_frequency == 0:
            self.clear()
            return
        expired = {name for name in names if self._expired_file(name)}  # deleted already
        written = []
        for name in names:
            if name in expired:
                continue
            try:
                written.append((os.stat(name).st_mtime, name))
            except FileNotFoundError:  # removed by another process meanwhile
                continue
        keep = len(names) - len(names) // self._cull_frequency
        for _, name in sorted(written)[: max(0, len(written) - keep)]:
            self._delete(name)  # type: ignore[attr-defined]

    def _expired_file(self, name: str) -> bool:
        try:
            with open(name, "rb") as handle:
                # FileBasedCache's helper (not in django-stubs) deletes the file when expired.
                return bool(self._is_expired(handle))  # type: ignore[attr-defined]
        except FileNotFoundError:
            return False
