"""The default Django cache of a single machine: Django's file cache, without compression.

What this cache mostly holds is the server decoder's ``mask_ref`` entries: ~0.4 MiB of float16
logits each, written on every click (``engine.services.decode``). Django's ``FileBasedCache``
zlib-compresses every value at level 6, which on those bytes took 5-10 ms per decode on a
2-core machine for an 8 % smaller file (and 2 ms more to read it back). Here values are
written as zlib "stored" blocks (level 0): no search for matches, only framing and a checksum,
so the files stay readable by Django's own class (and the other way round) and a cache folder
can be shared by processes of either.
"""

import pickle
import zlib
from typing import IO, Any

from django.core.cache.backends.filebased import FileBasedCache


class UncompressedFileBasedCache(FileBasedCache):
    """``FileBasedCache`` that stores values uncompressed (zlib level 0, same file format)."""

    def _write_content(self, file: IO[bytes], timeout: Any, value: Any) -> None:
        # The parent's layout: the pickled expiry, then the zlib stream of the pickled value.
        expiry = self.get_backend_timeout(timeout)
        file.write(pickle.dumps(expiry, self.pickle_protocol))
        file.write(zlib.compress(pickle.dumps(value, self.pickle_protocol), 0))
