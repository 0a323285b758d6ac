"""Blob stores. ``get_blob_store()`` returns the store configured in settings (cached);
``open_location()`` opens a store at a user-given place (a folder or ``s3://bucket/prefix``).
"""

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.blobs.base import (
    BlobError,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    InvalidBlobKey,
    validate_key,
)
from storage.blobs.local import LocalBlobStore

__all__ = [
    "BlobError",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreUnavailable",
    "InvalidBlobKey",
    "LocalBlobStore",
    "get_blob_store",
    "open_location",
    "reset_blob_store",
    "validate_key",
]

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@lru_cache(maxsize=1)
def get_blob_store() -> BlobStore:
    """The blob store named by ``STORAGE_BACKEND`` (``local`` or ``s3``)."""
    from django.conf import settings

    if settings.STORAGE_BACKEND == "s3":
        from storage.blobs.s3 import S3BlobStore

        return S3BlobStore(
            bucket=settings.S3_BUCKET,
            prefix=settings.S3_PREFIX,
            endpoint_url=settings.S3_ENDPOINT_URL,
            region=settings.S3_REGION,
            max_attempts=settings.S3_MAX_ATTEMPTS,
            presign_seconds=getattr(settings, "S3_PRESIGN_SECONDS", 3600),
            public_endpoint_url=settings.S3_PUBLIC_ENDPOINT_URL,
        )
    return LocalBlobStore(settings.BLOB_ROOT)


def reset_blob_store() -> None:
    """Forget the cached store (after settings change, e.g. in tests)."""
    get_blob_store.cache_clear()


def open_location(url: str) -> BlobStore:
    """A store rooted at ``url``: ``s3://bucket/prefix``, ``file:///path`` or a local path.

    S3 locations use the endpoint, region and retry settings of the configured S3 backend
    (``S3_ENDPOINT_URL``, ``S3_PUBLIC_ENDPOINT_URL``, ``S3_REGION``, ``S3_MAX_ATTEMPTS``) with
    the bucket and prefix of the URL. Raises ValueError for an empty location, an unknown scheme
    or a missing bucket.
    """
    if not url or not url.strip():
        raise ValueError("empty storage location: give a folder or s3://bucket/prefix")
    match = _URL_SCHEME.match(url)
    if match is None:
        return LocalBlobStore(Path(url).expanduser())
    scheme = match.group(1).lower()
    parts = urlsplit(url)
    if scheme == "file":
        if parts.netloc not in {"", "localhost"}:
            raise ValueError(f"{url!r}: file:// URLs must name a local path (file:///path)")
        if not parts.path:
            raise ValueError(f"{url!r}: file:// URL without a path")
        return LocalBlobStore(Path(unquote(parts.path)))
    if scheme == "s3":
        return _s3_location(url, bucket=parts.netloc, prefix=unquote(parts.path))
    raise ValueError(
        f"{url!r}: unsupported storage location scheme {scheme!r}; use a path or s3://"
    )


def _s3_location(url: str, *, bucket: str, prefix: str) -> BlobStore:
    from django.conf import settings

    from storage.blobs.s3 import S3BlobStore

    if not bucket:
        raise ValueError(f"{url!r}: S3 location without a bucket; use s3://bucket/prefix")
    return S3BlobStore(
        bucket=bucket,
        prefix=prefix.strip("/"),
        endpoint_url=getattr(settings, "S3_ENDPOINT_URL", None),
        region=getattr(settings, "S3_REGION", "us-east-1"),
        max_attempts=getattr(settings, "S3_MAX_ATTEMPTS", 5),
        presign_seconds=getattr(settings, "S3_PRESIGN_SECONDS", 3600),
        public_endpoint_url=getattr(settings, "S3_PUBLIC_ENDPOINT_URL", None),
    )
