"""Routes of retrain rounds: the REST endpoints under ``/api/`` and the rounds page, in one
module included at the site root by ``config/urls.py``."""

from django.urls import path

from training.api.rounds import (
    ProjectRoundCancelApi,
    ProjectRoundDetailApi,
    ProjectRoundListApi,
    ProjectRoundSettingsApi,
)
from training.web import rounds

urlpatterns = [
    path("api/projects/<int:project_id>/rounds/", ProjectRoundListApi.as_view(), name="api-rounds"),
    path(
        "api/projects/<int:project_id>/rounds/<int:number>/",
        ProjectRoundDetailApi.as_view(),
        name="api-round-detail",
    ),
    path(
        "api/projects/<int:project_id>/rounds/<int:number>/cancel/",
        ProjectRoundCancelApi.as_view(),
        name="api-round-cancel",
    ),
    path(
        "api/projects/<int:project_id>/round-settings/",
        ProjectRoundSettingsApi.as_view(),
        name="api-round-settings",
    ),
    path("projects/<int:project_id>/rounds/", rounds.rounds_page, name="project-rounds"),
    path(
        "projects/<int:project_id>/rounds/launch/",
        rounds.round_launch_view,
        name="project-round-launch",
    ),
    path(
        "projects/<int:project_id>/rounds/<int:number>/cancel/",
        rounds.round_cancel_view,
        name="project-round-cancel",
    ),
    path(
        "projects/<int:project_id>/rounds/settings/",
        rounds.round_settings_view,
        name="project-round-settings",
    ),
]
