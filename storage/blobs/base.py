"""The blob store interface shared by the local filesystem and S3 backends.

Keys are relative POSIX paths such as ``images/<sha256>``; content-addressed keys are used
wherever the content is immutable, so a second write of the same key is a no-op for callers.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO


class BlobError(Exception):
    """Base class of blob store errors."""


class BlobNotFound(BlobError, KeyError):
    """The key does not exist in the store."""


class BlobStoreUnavailable(BlobError):
    """The backend could not be reached after retries (network down, 5xx, throttled)."""


class InvalidBlobKey(BlobError, ValueError):
    """The key is empty, absolute, or escapes the store (``..``, backslashes, control chars)."""


# Any printable text (Unicode letters included, as S3 keys often have) except control characters,
# backslashes and a leading space; "." and ".." segments are refused separately.
_KEY_PART = re.compile(r"^[^\x00-\x1f\x7f\\ /][^\x00-\x1f\x7f\\/]*$")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidBlobKey`."""
    if not key or len(key) > 1024:
        raise InvalidBlobKey(f"invalid blob key {key!r}: empty or longer than 1024 characters")
    if key.startswith("/") or "\\" in key or "//" in key:
        raise InvalidBlobKey(f"invalid blob key {key!r}: must be a relative path with / separators")
    for part in key.split("/"):
        if part in {".", ".."} or not _KEY_PART.match(part):
            raise InvalidBlobKey(f"invalid blob key {key!r}: bad path segment {part!r}")
    return key


class BlobStore(ABC):
    """A flat key → bytes store. Writes are atomic: a reader sees the old object or the new one."""

    @abstractmethod
    def put_file(self, key: str, fileobj: BinaryIO, *, content_type: str | None = None) -> int:
        """Stream ``fileobj`` (read from its current position) to ``key``; return bytes written."""

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> int:
        import io

        return self.put_file(key, io.BytesIO(data), content_type=content_type)

    @abstractmethod
    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A streaming, read-only binary file object for ``key``; raises :class:`BlobNotFound`."""

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int:
        """Size of the object in bytes; raises :class:`BlobNotFound`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys that start with ``prefix``, in lexicographic order."""

    @abstractmethod
    def url(self, key: str, *, expires: int = 3600, filename: str | None = None) -> str | None:
        """A time-limited GET URL for ``key`` (S3 presigned), or None when the app serves it."""

    @abstractmethod
    def probe(self, *, timeout: float) -> None:
        """Raise :class:`BlobError` unless the store answers now (readiness probes): one cheap
        request, with no retries and at most ``timeout`` seconds per network step."""

    def browser_origin(self) -> str | None:
        """The origin (``scheme://host[:port]``) of the URLs :meth:`url` hands to browsers, which
        the pages' Content-Security-Policy must allow; None when the app serves every blob."""
        return None

    @property
    @abstractmethod
    def location(self) -> str:
        """Human-readable location for messages, e.g. ``/srv/blobs`` or ``s3://bucket/prefix``."""
