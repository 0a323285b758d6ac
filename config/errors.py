"""Site-wide 404 and 500 answers: JSON in the API's error shape under ``/api/``, the site's
pages (``annotation/templates/404.html``, ``500.html``) everywhere else.

DRF answers the errors raised inside API views itself; these handlers cover what never reaches
a view (an unknown ``/api/`` URL) and crashes outside DRF's handler.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from annotation.api.exceptions import error_body

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
