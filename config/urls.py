"""Top-level URL configuration: admin, the REST API under /api/, the web UI at the root."""

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    # Browsers ask for /favicon.ico wherever a page names no icon (the API docs, JSON answers).
    path(
        "favicon.ico",
        RedirectView.as_view(url=static("annotation/logo.svg"), permanent=True),
        name="favicon",
    ),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("annotation.api.urls")),
    path("api/", include("engine.api")),
    path("", include("annotation.web.urls")),
    path("", include("training.urls_promotion")),
    path("", include("training.urls")),
]

handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
