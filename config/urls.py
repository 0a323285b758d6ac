"""Top-level URL configuration: admin, the REST API under /api/, the web UI at the root."""

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config.errors import api_not_found

urlpatterns = [
    # Browsers ask for /favicon.ico wherever a page names no icon (the API docs, JSON answers).
    path(
        "favicon.ico",
        RedirectView.as_view(url=static("annotation/logo.svg"), permanent=True),
        name="favicon",
    ),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Split: the page's script is its own request (?script), as the site's CSP allows no
    # inline script; the template moves the inline style to a static file.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api/swagger_ui.html"),
        name="api-docs",
    ),
    path("api/", include("annotation.api.urls")),
    path("api/", include("engine.api")),
    path("", include("annotation.web.urls")),
    path("", include("training.urls_promotion")),
    path("", include("training.urls")),
    # Last: an /api/ URL no endpoint above matched answers the JSON 404, DEBUG on or off.
    re_path(r"^api/", api_not_found, name="api-not-found"),
]

handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
