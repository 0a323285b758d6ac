"""Routes of the annotation API (mounted under ``/api/``)."""

from django.urls import path

from annotation.api.auth import TokenObtainApi
from annotation.api.categories import CategoryDetailApi, CategoryListCreateApi
from annotation.api.coco_import import CocoImportApi, CocoImportUndoApi
from annotation.api.exports import ExportCreateApi
from annotation.api.image_removal import ImagesRemoveApi
from annotation.api.image_states import ImageSkipApi, ImagesReopenApi
from annotation.api.images import (
    ImageContentApi,
    ImageDetailApi,
    ImageDisplayApi,
    ImageListUploadApi,
    ImageThumbnailApi,
)
from annotation.api.leases import ImageDoneApi, ImageLeaseApi, NextImageApi
from annotation.api.masks import ImageMaskListApi, MaskDetailApi, ProjectMaskListApi
from annotation.api.members import MemberListSetApi, MemberRemoveApi
from annotation.api.projects import ProjectDetailApi, ProjectListCreateApi, ProjectStageApi
from annotation.api.review import (
    ImageApproveApi,
    ImageUnreviewApi,
    MaskApproveApi,
    MaskFixApi,
    MaskRejectApi,
    ReviewQueueApi,
)
from annotation.api.semi_automatic import (
    PrefillRejectApi,
    PrefillRestoreApi,
    PrefillSettingsApi,
    PrefillStartApi,
)
from annotation.api.stats import AnnotatorStatsApi, ProjectStatsApi

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
    path(
        "projects/<int:project_id>/categories/",
        CategoryListCreateApi.as_view(),
        name="api-category-list",
    ),
    path(
        "projects/<int:project_id>/categories/<int:category_id>/",
        CategoryDetailApi.as_view(),
        name="api-category-detail",
    ),
    path("images/<int:image_id>/", ImageDetailApi.as_view(), name="api-image-detail"),
    path(
        "projects/<int:project_id>/images/remove/",
        ImagesRemoveApi.as_view(),
        name="api-images-remove",
    ),
    path("images/<int:image_id>/content/", ImageContentApi.as_view(), name="api-image-content"),
    path("images/<int:image_id>/display/", ImageDisplayApi.as_view(), name="api-image-display"),
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
    path(
        "projects/<int:project_id>/annotation-imports/",
        CocoImportApi.as_view(),
        name="api-coco-import",
    ),
    path(
        "projects/<int:project_id>/annotation-imports/<int:job_id>/",
        CocoImportUndoApi.as_view(),
        name="api-coco-import-undo",
    ),
    # The annotation workflow: image queue and leases, accept/delete, review, stats.
    path("projects/<int:project_id>/next-image/", NextImageApi.as_view(), name="api-next-image"),
    path("images/<int:image_id>/lease/", ImageLeaseApi.as_view(), name="api-image-lease"),
    path("images/<int:image_id>/done/", ImageDoneApi.as_view(), name="api-image-done"),
    path("images/<int:image_id>/skip/", ImageSkipApi.as_view(), name="api-image-skip"),
    path(
        "projects/<int:project_id>/images/reopen/",
        ImagesReopenApi.as_view(),
        name="api-images-reopen",
    ),
    path("masks/<int:mask_id>/", MaskDetailApi.as_view(), name="api-mask-detail"),
    path("projects/<int:project_id>/review/", ReviewQueueApi.as_view(), name="api-review-queue"),
    path(
        "images/<int:image_id>/review/approve/",
        ImageApproveApi.as_view(),
        name="api-image-masks-approve",
    ),
    path(
        "images/<int:image_id>/review/undo/",
        ImageUnreviewApi.as_view(),
        name="api-image-masks-unreview",
    ),
    path("masks/<int:mask_id>/reject/", MaskRejectApi.as_view(), name="api-mask-reject"),
    path("masks/<int:mask_id>/approve/", MaskApproveApi.as_view(), name="api-mask-approve"),
    path("masks/<int:mask_id>/fix/", MaskFixApi.as_view(), name="api-mask-fix"),
    path("projects/<int:project_id>/stats/", ProjectStatsApi.as_view(), name="api-project-stats"),
    path(
        "projects/<int:project_id>/annotators/<int:user_id>/stats/",
        AnnotatorStatsApi.as_view(),
        name="api-annotator-stats",
    ),
    # Stages and the semi-automatic stage (issue 6).
    path("projects/<int:project_id>/stage/", ProjectStageApi.as_view(), name="api-project-stage"),
    path("projects/<int:project_id>/prefill/", PrefillStartApi.as_view(), name="api-prefill"),
    path(
        "projects/<int:project_id>/prefill-settings/",
        PrefillSettingsApi.as_view(),
        name="api-prefill-settings",
    ),
    path(
        "masks/<int:mask_id>/prefill-reject/",
        PrefillRejectApi.as_view(),
        name="api-prefill-reject",
    ),
    path(
        "masks/<int:mask_id>/prefill-restore/",
        PrefillRestoreApi.as_view(),
        name="api-prefill-restore",
    ),
]
