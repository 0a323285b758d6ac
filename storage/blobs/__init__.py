"""Blob stores. ``get_blob_store()`` returns the store configured in settings (cached)."""

from functools import lru_cache

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
    "reset_blob_store",
    "validate_key",
]


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
        )
    return LocalBlobStore(settings.BLOB_ROOT)


def reset_blob_store() -> None:
    """Forget the cached store (after settings change, e.g. in tests)."""
    get_blob_store.cache_clear()
