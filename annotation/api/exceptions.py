"""The API's exception handler: domain errors become JSON 4xx answers.

``{"error": code, "detail": message, "details": ...}`` for every :class:`DomainError`; blob
store failures become 404 / 503 in the same shape; everything else (validation errors,
``Http404``, ``PermissionDenied``, authentication) is answered by DRF as usual.
"""

import logging
from typing import Any

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotation.errors import DomainError
from storage.blobs import BlobNotFound, BlobStoreUnavailable

logger = logging.getLogger(__name__)


def error_body(code: str, detail: str, details: object = None) -> dict[str, object]:
    return {"error": code, "detail": detail, "details": details}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code)
    if isinstance(exc, BlobNotFound):
        return Response(
            error_body("blob_missing", "the stored file is missing"),
            status=status.HTTP_404_NOT_FOUND,
        )
    if isinstance(exc, BlobStoreUnavailable):
        logger.warning("blob store unavailable: %s", exc)
        return Response(
            error_body("storage_unavailable", "the blob store cannot be reached; retry later"),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return drf_exception_handler(exc, context)
