"""Content-Security-Policy of every answer (django-csp), with the blob store's origin added.

The pages load their scripts, styles and images from this origin only, so a script injected
into a page (a project name, a label, a file name that escaped escaping) does not run, and a
page cannot be framed. The policy (``settings.CONTENT_SECURITY_POLICY``, built by
:func:`policy`) allows what the pages need and nothing more:

- ``script-src 'self' 'wasm-unsafe-eval'``: the tool compiles onnxruntime-web's WebAssembly for
  browser-side decoding (``'wasm-unsafe-eval'`` allows WebAssembly only, not ``eval``);
- ``worker-src 'self' blob:``: the runtime's threads are dedicated workers;
- ``style-src-attr 'unsafe-inline'``: progress bars and the lineage tree set a width or an
  indent in a ``style`` attribute (styles, never scripts);
- ``img-src`` / ``connect-src``: with ``STORAGE_BACKEND=s3`` images are drawn from presigned URLs,
  so the store's origin (:meth:`storage.blobs.base.BlobStore.browser_origin`) is added per
  response by :class:`BlobOriginCSPMiddleware`.

``MASKLOOP_CSP`` chooses ``enforce`` (default), ``report-only`` (browsers only report
violations in their console, to try a changed deployment) or ``off``.
"""

import functools
import logging
from typing import TYPE_CHECKING, Any

from csp.constants import NONE, SELF, UNSAFE_INLINE, WASM_UNSAFE_EVAL
from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings

if TYPE_CHECKING:  # settings.py imports this module: no request machinery at import time
    from django.http import HttpRequest, HttpResponseBase

logger = logging.getLogger(__name__)

MODES = ("enforce", "report-only", "off")
BLOB_DIRECTIVES = ("img-src", "connect-src")


def policy() -> dict[str, Any]:
    """django-csp's ``{"DIRECTIVES": ...}`` of the pages (see the module docstring)."""
    return {
        "DIRECTIVES": {
            "default-src": [SELF],
            "script-src": [SELF, WASM_UNSAFE_EVAL],
            "worker-src": [SELF, "blob:"],
            "style-src": [SELF],
            "style-src-attr": [UNSAFE_INLINE],
            "img-src": [SELF, "data:", "blob:"],
            "font-src": [SELF, "data:"],
            "connect-src": [SELF],
            "object-src": [NONE],
            "base-uri": [SELF],
            "form-action": [SELF],
            "frame-ancestors": [NONE],
        }
    }


def policy_settings(mode: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(``CONTENT_SECURITY_POLICY``, ``CONTENT_SECURITY_POLICY_REPORT_ONLY``) for a mode."""
    if mode not in MODES:
        raise ValueError(f"MASKLOOP_CSP={mode!r}: choose one of {', '.join(MODES)}")
    if mode == "off":
        return None, None
    return (policy(), None) if mode == "enforce" else (None, policy())


@functools.lru_cache(maxsize=4)
def _blob_origin(backend: str, bucket: str, endpoint: str, public: str, region: str) -> str | None:
    # Keyed by the settings that decide it: tests switch stores; a process builds it once.
    from storage.blobs import BlobError, get_blob_store

    try:
        return get_blob_store().browser_origin()
    except BlobError as exc:  # e.g. no credentials: the pages still answer, S3 images fail
        logger.warning("the S3 origin for the Content-Security-Policy is unknown: %s", exc)
        return None


def blob_origin() -> str | None:
    """The origin of the blob store's browser URLs for the current settings (None: local)."""
    if settings.STORAGE_BACKEND != "s3":
        return None
    return _blob_origin(
        settings.STORAGE_BACKEND,
        settings.S3_BUCKET,
        settings.S3_ENDPOINT_URL or "",
        settings.S3_PUBLIC_ENDPOINT_URL or "",
        settings.S3_REGION,
    )


class BlobOriginCSPMiddleware(CSPMiddleware):
    """django-csp's middleware, with the blob store's origin allowed for images and fetches."""

    def get_policy_parts(
        self, request: "HttpRequest", response: "HttpResponseBase", report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        origin = blob_origin()
        if origin:
            update = dict(parts.update or {})
            for directive in BLOB_DIRECTIVES:
                update[directive] = [*_as_list(update.get(directive)), origin]
            parts.update = update
        return parts


def _as_list(value: object) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set):
        return list(value)
    return [value]
