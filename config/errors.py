"""Site-wide 404 and 500 answers: JSON in the API's error shape under ``/api/``, the site's
pages (``annotation/templates/404.html``, ``500.html``) everywhere else.

DRF answers the errors raised inside API views itself; these cover what never reaches a view
(an unknown ``/api/`` URL) and crashes outside DRF's handler:

- ``handler404`` / ``handler500`` (``not_found``, ``server_error``), which Django calls only
  with DEBUG off;
- ``api_not_found``, the last URL pattern, matching any ``/api/`` URL no endpoint took, so an
  unknown API URL answers the JSON 404 with DEBUG on too (``make run``);
- ``ApiDebugErrorsMiddleware``: with DEBUG on, an exception escaping an ``/api/`` view answers
  the JSON 500 instead of Django's HTML debug page (web pages keep that page).
"""

import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.common import CommonMiddleware
from django.urls import is_valid_path
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from annotation.api.exceptions import error_body

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        body = error_body("not_found", f"no API endpoint at {request.path} (see /api/docs/)")
        return JsonResponse(body, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        body = error_body("server_error", "the server failed; the error is in its log")
        return JsonResponse(body, status=500)
    return defaults.server_error(request)


def _slash_redirect(request: HttpRequest) -> HttpResponseBase | None:
    """CommonMiddleware's APPEND_SLASH redirect, which the catch-all would otherwise stop (it
    redirects only when the URL matches nothing): ``/api/projects/1`` still goes to
    ``/api/projects/1/``, with Django's own rules (no redirect of a POST with DEBUG on)."""
    if not settings.APPEND_SLASH or request.path_info.endswith("/"):
        return None
    match = is_valid_path(f"{request.path_info}/", getattr(request, "urlconf", None))
    if (
        not match
        or match.func is api_not_found
        or not getattr(match.func, "should_append_slash", True)
    ):
        return None
    common = CommonMiddleware(lambda _request: HttpResponse())
    return common.response_redirect_class(common.get_full_path_with_slash(request))


@csrf_exempt  # answers 404 whatever the method, as an unmatched URL did before it existed
def api_not_found(request: HttpRequest) -> HttpResponseBase:
    """The last URL pattern: any ``/api/`` URL that no endpoint matched."""
    return _slash_redirect(request) or not_found(request, Http404())


# Exceptions Django itself answers with a 4xx (403, 400): left to it.
_CLIENT_ERRORS = (PermissionDenied, SuspiciousOperation, BadRequest)


class ApiDebugErrorsMiddleware:
    """With DEBUG on, the JSON 404 / 500 of an ``/api/`` view's uncaught Http404 or exception
    (the traceback goes to the log); with DEBUG off it does nothing, so Django's handlers
    answer and the test client still re-raises."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not settings.DEBUG or not _is_api(request) or isinstance(exception, _CLIENT_ERRORS):
            return None
        if isinstance(exception, Http404):
            return not_found(request, exception)
        logger.exception("Internal Server Error: %s", request.path)
        return server_error(request)
