"""Routes of the engine API (mounted under ``/api/``)."""

from django.urls import path

from engine.api.automatic import (
    AutomaticRunCancelApi,
    AutomaticRunDetailApi,
    AutomaticRunResumeApi,
    ProjectAutomaticRunsApi,
)
from engine.api.decode import ImageDecodeApi
from engine.api.embeddings import (
    EmbeddingPrecomputeApi,
    EmbeddingRequestApi,
    ImageEmbeddingApi,
    ImageEmbeddingDataApi,
)
from engine.api.jobs import JobCancelApi, JobDetailApi, JobFileApi, ProjectJobListApi
from engine.api.model_versions import (
    ModelVersionDeployApi,
    ModelVersionDetailApi,
    ModelVersionOnnxApi,
    ProjectModelVersionListApi,
)

urlpatterns = [
    path("projects/<int:project_id>/jobs/", ProjectJobListApi.as_view(), name="api-job-list"),
    path("jobs/<int:job_id>/", JobDetailApi.as_view(), name="api-job-detail"),
    path("jobs/<int:job_id>/cancel/", JobCancelApi.as_view(), name="api-job-cancel"),
    path("jobs/<int:job_id>/files/<str:name>", JobFileApi.as_view(), name="api-job-file"),
    path(
        "projects/<int:project_id>/model-versions/",
        ProjectModelVersionListApi.as_view(),
        name="api-model-version-list",
    ),
    path(
        "model-versions/<int:version_id>/",
        ModelVersionDetailApi.as_view(),
        name="api-model-version-detail",
    ),
    path(
        "model-versions/<int:version_id>/deploy/",
        ModelVersionDeployApi.as_view(),
        name="api-model-version-deploy",
    ),
    path(
        "projects/<int:project_id>/embeddings/precompute/",
        EmbeddingPrecomputeApi.as_view(),
        name="api-embedding-precompute",
    ),
    path(
        "projects/<int:project_id>/embeddings/requests/",
        EmbeddingRequestApi.as_view(),
        name="api-embedding-request",
    ),
    path(
        "model-versions/<int:version_id>/onnx/",
        ModelVersionOnnxApi.as_view(),
        name="api-model-version-onnx",
    ),
    path(
        "images/<int:image_id>/embedding/",
        ImageEmbeddingApi.as_view(),
        name="api-image-embedding",
    ),
    path(
        "images/<int:image_id>/embedding/data/",
        ImageEmbeddingDataApi.as_view(),
        name="api-image-embedding-data",
    ),
    path("images/<int:image_id>/decode/", ImageDecodeApi.as_view(), name="api-image-decode"),
    path(
        "projects/<int:project_id>/automatic-runs/",
        ProjectAutomaticRunsApi.as_view(),
        name="api-automatic-runs",
    ),
    path(
        "automatic-runs/<int:job_id>/",
        AutomaticRunDetailApi.as_view(),
        name="api-automatic-run-detail",
    ),
    path(
        "automatic-runs/<int:job_id>/cancel/",
        AutomaticRunCancelApi.as_view(),
        name="api-automatic-run-cancel",
    ),
    path(
        "automatic-runs/<int:job_id>/resume/",
        AutomaticRunResumeApi.as_view(),
        name="api-automatic-run-resume",
    ),
]
