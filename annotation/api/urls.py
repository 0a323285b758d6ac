"""Routes of the annotation API (mounted under ``/api/``)."""

from django.urls import path

from annotation.api.auth import TokenObtainApi
from annotation.api.exports import ExportCreateApi
from annotation.api.images import (
    ImageContentApi,
    ImageDetailApi,
    ImageListUploadApi,
    ImageThumbnailApi,
)
from annotation.api.masks import ImageMaskListApi, ProjectMaskListApi
from annotation.api.members import MemberListSetApi, MemberRemoveApi
from annotation.api.projects import ProjectDetailApi, ProjectListCreateApi

urlpatterns = [
    path("auth/token/", TokenObtainApi.as_view(), name="api-token"),
    path("projects/", ProjectListCreateApi.as_view(), name="api-project-list"),
    path("projects/<int:project_id>/", ProjectDetailApi.as_view(), name="api-project-detail"),
    path(
        "projects/<int:project_id>/members/",
        MemberListSetApi.as_view(),
        name="api-member-list",
    ),
    path(
        "projects/<int:project_id>/members/<int:user_id>/",
        MemberRemoveApi.as_view(),
        name="api-member-detail",
    ),
    path(
        "projects/<int:project_id>/images/",
        ImageListUploadApi.as_view(),
        name="api-image-list",
    ),
    path("images/<int:image_id>/", ImageDetailApi.as_view(), name="api-image-detail"),
    path("images/<int:image_id>/content/", ImageContentApi.as_view(), name="api-image-content"),
    path(
        "images/<int:image_id>/thumbnail/",
        ImageThumbnailApi.as_view(),
        name="api-image-thumbnail",
    ),
    path("images/<int:image_id>/masks/", ImageMaskListApi.as_view(), name="api-image-masks"),
    path("projects/<int:project_id>/masks/", ProjectMaskListApi.as_view(), name="api-mask-list"),
    path(
        "projects/<int:project_id>/exports/",
        ExportCreateApi.as_view(),
        name="api-export-create",
    ),
]
