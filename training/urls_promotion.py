"""Routes of promotion and the data-engine dashboard: the REST endpoints under ``/api/`` and
the web pages, in one module included at the site root by ``config/urls.py``."""

from django.urls import path

from training import web_dashboard
from training.api_promotion import (
    DashboardApi,
    DeployedVersionApi,
    VersionPromoteApi,
    VersionRollbackApi,
)

urlpatterns = [
    path(
        "api/projects/<int:project_id>/model-versions/<int:version_id>/promote/",
        VersionPromoteApi.as_view(),
        name="api-model-version-promote",
    ),
    path(
        "api/projects/<int:project_id>/model-versions/rollback/",
        VersionRollbackApi.as_view(),
        name="api-model-version-rollback",
    ),
    path(
        "api/projects/<int:project_id>/deployed-version/",
        DeployedVersionApi.as_view(),
        name="api-project-deployed-version",
    ),
    path(
        "api/projects/<int:project_id>/dashboard/",
        DashboardApi.as_view(),
        name="api-project-dashboard",
    ),
    path(
        "projects/<int:project_id>/dashboard/",
        web_dashboard.dashboard_page,
        name="project-dashboard",
    ),
    path(
        "projects/<int:project_id>/dashboard/promote/<int:version_id>/",
        web_dashboard.promote_view,
        name="project-dashboard-promote",
    ),
    path(
        "projects/<int:project_id>/dashboard/rollback/",
        web_dashboard.rollback_view,
        name="project-dashboard-rollback",
    ),
]
