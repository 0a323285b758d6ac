"""Jobs (list, progress, cancel, output files), model versions and embeddings over REST.

Model versions: any member lists and reads them; project admins import a checkpoint (multipart
upload, validated and ONNX-exported in the request: use ``manage.py import_checkpoint`` for the
multi-GB official files) and deploy a version. Embeddings: admins start a bulk precompute job;
any member asks for the images they are about to open to be embedded first.
"""

import mimetypes
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import FileResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import path, reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Project
from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import (
    job_file,
    job_get_for_user,
    model_version_get_for_user,
    project_get_for_user,
    project_jobs,
    project_model_versions,
)
from engine.models import Job, ModelVersion
from engine.sam.config import CONFIGS
from engine.selectors import model_version_for_project, project_images_by_ids
from engine.services.embeddings import (
    EmbeddingRefused,
    embeddings_precompute_start,
    embeddings_request,
)
from engine.services.jobs import job_cancel
from engine.services.registry import model_version_deploy, model_version_import
from storage.blobs import get_blob_store


class JobFileOutput(serializers.Serializer[Any]):
    name = serializers.CharField()
    bytes = serializers.IntegerField(allow_null=True)
    url = serializers.CharField(help_text="download path (project admins)")


class JobOutput(serializers.ModelSerializer[Job]):
    project = serializers.PrimaryKeyRelatedField[Project](read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField[User](
        slug_field="username", read_only=True, allow_null=True
    )
    progress = serializers.FloatField(read_only=True, allow_null=True, help_text="0 to 1")
    is_finished = serializers.BooleanField(read_only=True)
    files = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "project",
            "kind",
            "status",
            "progress",
            "progress_done",
            "progress_total",
            "message",
            "error",
            "params",
            "result",
            "attempts",
            "is_finished",
            "files",
            "created_by",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(JobFileOutput(many=True))
    def get_files(self, job: Job) -> list[dict[str, Any]]:
        return job_files_for_display(job)


def job_files_for_display(job: Job) -> list[dict[str, Any]]:
    """The output files of a succeeded job with their download paths (empty otherwise)."""
    if job.status != Job.Status.SUCCEEDED or not isinstance(job.result, dict):
        return []
    return [
        {
            "name": entry["name"],
            "bytes": entry.get("bytes"),
            "url": reverse("api-job-file", args=[job.pk, entry["name"]]),
        }
        for entry in job.result.get("files") or []
        if isinstance(entry, dict) and entry.get("name") and entry.get("key")
    ]


class ModelVersionOutput(serializers.ModelSerializer[ModelVersion]):
    project = serializers.PrimaryKeyRelatedField[Project](read_only=True)
    # "parent" shadows Field.parent for the type checker only; DRF collects declared fields.
    parent = serializers.PrimaryKeyRelatedField[ModelVersion](  # type: ignore[assignment]
        read_only=True, allow_null=True
    )
    is_deployed = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "project",
            "name",
            "arch",
            "config",
            "sha256",
            "parent",
            "round",
            "metrics",
            "status",
            "is_deployed",
            "created_at",
        ]
        read_only_fields = fields

    def get_is_deployed(self, version: ModelVersion) -> bool:
        return version.project.deployed_version_id == version.pk


class JobFilterInput(serializers.Serializer[Any]):
    kind = serializers.ChoiceField(choices=Job.Kind.choices, required=False)
    status = serializers.ChoiceField(choices=Job.Status.choices, required=False)


class ProjectJobListApi(generics.ListAPIView[Job]):
    """The jobs of a project, newest first (any member)."""

    serializer_class = JobOutput

    def get_queryset(self) -> QuerySet[Job]:
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        project = project_get_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        filters = JobFilterInput(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return project_jobs(project=project, **filters.validated_data)

    @extend_schema(operation_id="jobs_list", parameters=[JobFilterInput])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class JobDetailApi(APIView):
    @extend_schema(operation_id="jobs_retrieve", responses={200: JobOutput})
    def get(self, request: Request, job_id: int) -> Response:
        job = job_get_for_user(user=request.user, job_id=job_id)
        return Response(JobOutput(job).data)


def _require_job_admin(request: Request, job: Job) -> None:
    """Jobs of a project: its admins; jobs without a project were visible to superusers only."""
    if job.project is not None:
        require_admin(user=request.user, project=job.project)


class JobCancelApi(APIView):
    @extend_schema(operation_id="jobs_cancel", request=None, responses={200: JobOutput})
    def post(self, request: Request, job_id: int) -> Response:
        job = job_get_for_user(user=request.user, job_id=job_id)
        _require_job_admin(request, job)
        job = job_cancel(job_id=job.pk)
        return Response(JobOutput(job).data)


class JobFileApi(APIView):
    @extend_schema(
        operation_id="jobs_file_download",
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="the file, as an attachment"
            ),
            302: OpenApiResponse(description="redirect to a presigned URL of the blob store"),
        },
    )
    def get(self, request: Request, job_id: int, name: str) -> HttpResponseBase:
        job = job_get_for_user(user=request.user, job_id=job_id)
        _require_job_admin(request, job)
        entry = job_file(job=job, name=name)
        store = get_blob_store()
        presigned = store.url(entry["key"], expires=settings.S3_PRESIGN_SECONDS, filename=name)
        if presigned:
            return HttpResponseRedirect(presigned)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return FileResponse(
            store.open(entry["key"]), as_attachment=True, filename=name, content_type=content_type
        )


class ModelVersionImportInput(serializers.Serializer[Any]):
    file = serializers.FileField(help_text="a SAM checkpoint (.pth): official or maskloop's own")
    arch = serializers.ChoiceField(
        choices=sorted(CONFIGS), required=False, help_text="expected architecture (checked)"
    )
    name = serializers.CharField(required=False, default="", max_length=200, allow_blank=True)
    deploy = serializers.BooleanField(required=False, default=False)


class ProjectModelVersionListApi(generics.ListAPIView[ModelVersion]):
    """GET: the model versions of a project, newest first (any member). POST: import one."""

    serializer_class = ModelVersionOutput
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[ModelVersion]:
        if getattr(self, "swagger_fake_view", False):
            return ModelVersion.objects.none()
        project = project_get_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        return project_model_versions(project=project)

    @extend_schema(operation_id="model_versions_list")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="model_versions_import",
        request={"multipart/form-data": ModelVersionImportInput},
        responses={201: ModelVersionOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = acting_user(request.user)
        project = project_get_for_user(user=user, project_id=project_id)
        require_admin(user=user, project=project)
        data = ModelVersionImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        options = data.validated_data
        version = model_version_import(
            project=project,
            path_or_file=options["file"],
            arch=options.get("arch"),
            name=options["name"],
            deploy=options["deploy"],
            user=user,
        )
        version.project.refresh_from_db(fields=["deployed_version"])
        return Response(ModelVersionOutput(version).data, status=status.HTTP_201_CREATED)


class ModelVersionDetailApi(APIView):
    @extend_schema(operation_id="model_versions_retrieve", responses={200: ModelVersionOutput})
    def get(self, request: Request, version_id: int) -> Response:
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        return Response(ModelVersionOutput(version).data)


class ModelVersionDeployApi(APIView):
    @extend_schema(
        operation_id="model_versions_deploy", request=None, responses={200: ModelVersionOutput}
    )
    def post(self, request: Request, version_id: int) -> Response:
        user = acting_user(request.user)
        version = model_version_get_for_user(user=user, version_id=version_id)
        require_admin(user=user, project=version.project)
        model_version_deploy(project=version.project, version=version)
        return Response(ModelVersionOutput(version).data)


class EmbeddingPrecomputeInput(serializers.Serializer[Any]):
    model_version = serializers.IntegerField(
        required=False, help_text="a version of the project (default: the deployed one)"
    )


class EmbeddingPrecomputeApi(APIView):
    @extend_schema(
        operation_id="embeddings_precompute",
        request=EmbeddingPrecomputeInput,
        responses={202: JobOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = acting_user(request.user)
        project = project_get_for_user(user=user, project_id=project_id)
        require_admin(user=user, project=project)
        data = EmbeddingPrecomputeInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = _version_of(project, data.validated_data.get("model_version"))
        job = embeddings_precompute_start(project=project, model_version=version, user=user)
        return Response(JobOutput(job).data, status=status.HTTP_202_ACCEPTED)


class EmbeddingRequestInput(serializers.Serializer[Any]):
    image_ids = serializers.ListField(
        child=serializers.IntegerField(), min_length=1, max_length=100,
        help_text="images about to be opened, most urgent first",
    )  # fmt: skip
    model_version = serializers.IntegerField(
        required=False, help_text="a version of the project (default: the deployed one)"
    )


class EmbeddingRequestOutput(serializers.Serializer[Any]):
    queued = serializers.ListField(
        child=serializers.IntegerField(), help_text="ids queued (the others are stored already)"
    )


class EmbeddingRequestApi(APIView):
    @extend_schema(
        operation_id="embeddings_request",
        request=EmbeddingRequestInput,
        responses={202: EmbeddingRequestOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = acting_user(request.user)
        project = project_get_for_user(user=user, project_id=project_id)
        data = EmbeddingRequestInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = _version_of(project, data.validated_data.get("model_version"))
        if version is None:
            raise EmbeddingRefused(f"project {project.name!r} has no deployed model version")
        ids: list[int] = data.validated_data["image_ids"]
        found = {image.pk: image for image in project_images_by_ids(project=project, image_ids=ids)}
        unknown = [image_id for image_id in ids if image_id not in found]
        if unknown:
            raise EmbeddingRefused(f"no images {unknown} in project {project.name!r}")
        queued = embeddings_request(
            images=[found[image_id] for image_id in dict.fromkeys(ids)], model_version=version
        )
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)


def _version_of(project: Project, version_id: int | None) -> ModelVersion | None:
    """The project's version ``version_id`` (EmbeddingRefused if not its), else the deployed."""
    if version_id is None:
        return project.deployed_version
    version = model_version_for_project(project=project, version_id=version_id)
    if version is None:
        raise EmbeddingRefused(f"no model version {version_id} in project {project.name!r}")
    return version


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
]
