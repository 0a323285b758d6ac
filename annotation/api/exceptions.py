"""The API's exception handler: every error answers JSON with a ``code`` and a ``detail``.

- :class:`DomainError`: ``{"code", "detail", "details", **extra}`` with the error's status
  (``error`` repeats ``code`` for clients written before ``code`` existed);
- blob store failures: 404 ``blob_missing`` / 503 ``storage_unavailable`` in the same shape;
- DRF's own errors (validation, ``Http404``, ``PermissionDenied``, authentication) keep DRF's
  body (``{"field": [...]}`` for validation) with ``code`` added (``invalid``, ``not_found``,
  ``permission_denied``, ``not_authenticated``...) and, for validation, a one-line ``detail``.
"""

import logging
from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotation.errors import DomainError
from storage.blobs import BlobNotFound, BlobStoreUnavailable

logger = logging.getLogger(__name__)


def error_body(
    code: str, detail: str, details: object = None, extra: dict[str, object] | None = None
) -> dict[str, object]:
    return {**(extra or {}), "code": code, "error": code, "detail": detail, "details": details}


def _validation_summary(data: Any) -> str:
    """One line naming the first bad field: ``"reason: This field is required."``."""
    if isinstance(data, dict):
        for key, value in data.items():
            inner = _validation_summary(value)
            return inner if key == "non_field_errors" else f"{key}: {inner}"
    if isinstance(data, list) and data:
        return _validation_summary(data[0])
    return str(data)


def _with_code(exc: exceptions.APIException, response: Response) -> Response:
    if not isinstance(response.data, dict):
        # A validation error raised with a list: keep it, under "errors".
        response.data = {"errors": response.data}
    if isinstance(exc, exceptions.ValidationError):
        response.data.setdefault("code", "invalid")
        response.data.setdefault("detail", _validation_summary(exc.detail))
    else:
        response.data.setdefault("code", exc.default_code)
    return response


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(
            error_body(exc.code, exc.message, exc.details, exc.extra), status=exc.status_code
        )
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
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    # drf_exception_handler turns Http404 and Django's PermissionDenied into DRF exceptions
    # before answering; map them the same way to find the code.
    if isinstance(exc, exceptions.APIException):
        return _with_code(exc, response)
    if response.status_code == status.HTTP_404_NOT_FOUND:
        return _with_code(exceptions.NotFound(), response)
    if response.status_code == status.HTTP_403_FORBIDDEN:
        return _with_code(exceptions.PermissionDenied(), response)
    return response
