"""Jobs over REST: list, progress, cancel, output files."""

import mimetypes
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import FileResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Project
from annotation.permissions import require_admin
from annotation.selectors.projects import (
    job_file,
    job_get_for_user,
    job_may_manage,
    job_shown_fields,
    project_get_for_user,
    project_jobs,
)
from engine.models import Job
from engine.services.jobs import job_cancel
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
            "recoveries",
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

    def to_representation(self, instance: Job) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["params"], data["result"] = job_shown_fields(
            job=instance, may_manage=self._may_manage(instance)
        )
        return data

    def _may_manage(self, job: Job) -> bool:
        """Per project, once per answer (a list shares its context with each row)."""
        request = self.context.get("request")
        if request is None:
            return False  # no caller known: show what any member may see
        known: dict[int | None, bool] = self.context.setdefault(  # type: ignore[attr-defined]
            "job_may_manage", {}
        )
        if job.project_id not in known:
            known[job.project_id] = job_may_manage(user=request.user, job=job)
        return known[job.project_id]


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
        return Response(JobOutput(job, context={"request": request}).data)


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
        return Response(JobOutput(job, context={"request": request}).data)


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
