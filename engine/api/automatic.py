"""Automatic runs over REST (project admins only): start with settings overrides, list,
detail with per-image figures and failed images, cancel, resume."""

from typing import Any

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.ids import IdField
from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import job_get_for_user, project_get_for_user
from engine.api.jobs import JobOutput
from engine.models import Job
from engine.services.automatic import (
    AutomaticRefused,
    automatic_cancel,
    automatic_resume,
    automatic_start,
)
from engine.services.automatic.lifecycle import RUN_KINDS
from engine.services.automatic.params import SETTABLE
from engine.services.automatic.selectors import (
    IMAGE_FILTERS,
    RunImages,
    automatic_image_filter,
    automatic_run_images,
    automatic_runs,
)


class RunCountsOutput(serializers.Serializer[Any]):
    pending = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()
    masks = serializers.IntegerField()


class FailedImageOutput(serializers.Serializer[Any]):
    image = serializers.IntegerField()
    error = serializers.CharField()
    attempts = serializers.IntegerField()


class RunOutput(JobOutput):
    """A run: the job plus its pinned version, settings, throughput and ETA."""

    model_version = serializers.SerializerMethodField()
    settings = serializers.SerializerMethodField()
    images_per_s = serializers.SerializerMethodField()
    eta_s = serializers.SerializerMethodField()

    class Meta(JobOutput.Meta):
        fields = [*JobOutput.Meta.fields, "model_version", "settings", "images_per_s", "eta_s"]
        read_only_fields = fields

    def get_model_version(self, job: Job) -> int | None:
        value = (job.params or {}).get("model_version_id")
        return None if value is None else int(value)

    def get_settings(self, job: Job) -> dict[str, Any]:
        return dict((job.params or {}).get("settings") or {})

    def get_images_per_s(self, job: Job) -> float | None:
        value = (job.result or {}).get("images_per_s")
        return None if value is None else float(value)

    def get_eta_s(self, job: Job) -> float | None:
        value = (job.result or {}).get("eta_s")
        return None if value is None or job.is_finished else float(value)


class RunDetailOutput(RunOutput):
    counts = serializers.SerializerMethodField()
    mean_timings = serializers.SerializerMethodField(
        help_text="seconds per done image and stage (load, encoder, decoder, postprocess, db)"
    )
    failed_images = serializers.SerializerMethodField(help_text="the first 100, by image id")

    class Meta(RunOutput.Meta):
        fields = [*RunOutput.Meta.fields, "counts", "mean_timings", "failed_images"]
        read_only_fields = fields

    def _figures(self, job: Job) -> RunImages:
        """Computed by the view once (three methods read it), or here for a lone job."""
        figures = self.context.get("figures")
        return figures if isinstance(figures, RunImages) else automatic_run_images(job=job)

    @extend_schema_field(RunCountsOutput)
    def get_counts(self, job: Job) -> dict[str, int]:
        figures = self._figures(job)
        return {
            "pending": figures.pending,
            "done": figures.done,
            "failed": figures.failed,
            "masks": figures.masks,
        }

    def get_mean_timings(self, job: Job) -> dict[str, float]:
        return dict(self._figures(job).mean_timings)

    @extend_schema_field(FailedImageOutput(many=True))
    def get_failed_images(self, job: Job) -> list[dict[str, Any]]:
        return list(self._figures(job).failed_images)


class RunStartInput(serializers.Serializer[Any]):
    settings = serializers.DictField(
        required=False,
        default=dict,
        help_text="generator overrides on top of the SA-1B defaults and the project's "
        f"automatic_settings; keys: {', '.join(sorted(SETTABLE))}",
    )
    images = serializers.CharField(
        required=False, default="all", help_text=f"which images: {IMAGE_FILTERS}"
    )
    image_ids = serializers.ListField(
        child=IdField(),
        required=False,
        min_length=1,
        help_text="explicit image ids (instead of `images`)",
    )
    chunk = serializers.IntegerField(
        required=False, min_value=1, max_value=10_000, help_text="images per task"
    )
    in_flight = serializers.IntegerField(
        required=False, min_value=1, max_value=10_000, help_text="tasks queued at once"
    )


class RunResumeInput(serializers.Serializer[Any]):
    retry_failed = serializers.BooleanField(
        required=False,
        default=False,
        help_text="also retry images that failed for a reason of their own (e.g. corrupt)",
    )


def _run_for_admin(request: Request, job_id: int) -> Job:
    job = job_get_for_user(user=request.user, job_id=job_id)
    if job.kind not in RUN_KINDS or job.project is None:
        raise Http404("no such automatic run")
    require_admin(user=request.user, project=job.project)
    return job


class ProjectAutomaticRunsApi(APIView):
    @extend_schema(operation_id="automatic_runs_list", responses={200: RunOutput(many=True)})
    def get(self, request: Request, project_id: int) -> Response:
        """The project's automatic and prefill runs, newest first."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        return Response(RunOutput(automatic_runs(project=project)[:100], many=True).data)

    @extend_schema(
        operation_id="automatic_runs_start", request=RunStartInput, responses={202: RunOutput}
    )
    def post(self, request: Request, project_id: int) -> Response:
        """Start an automatic run with the deployed model (SA-1B settings by default)."""
        user = acting_user(request.user)
        project = project_get_for_user(user=user, project_id=project_id)
        require_admin(user=user, project=project)
        data = RunStartInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        image_ids = values.get("image_ids")
        if image_ids is None:
            try:
                image_ids = automatic_image_filter(project=project, spec=values["images"])
            except ValueError as exc:
                raise AutomaticRefused(str(exc)) from exc
        job = automatic_start(
            project=project,
            user=user,
            params=values["settings"],
            image_ids=image_ids,
            chunk=values.get("chunk"),
            in_flight=values.get("in_flight"),
        )
        return Response(RunOutput(job).data, status=status.HTTP_202_ACCEPTED)


class AutomaticRunDetailApi(APIView):
    @extend_schema(operation_id="automatic_runs_retrieve", responses={200: RunDetailOutput})
    def get(self, request: Request, job_id: int) -> Response:
        """One run with its per-image counts, mean stage timings and failed images."""
        job = _run_for_admin(request, job_id)
        figures = automatic_run_images(job=job)
        return Response(RunDetailOutput(job, context={"figures": figures}).data)


class AutomaticRunCancelApi(APIView):
    @extend_schema(operation_id="automatic_runs_cancel", request=None, responses={200: RunOutput})
    def post(self, request: Request, job_id: int) -> Response:
        """Stop the run after the images being generated; the rest stays pending."""
        job = automatic_cancel(job_id=_run_for_admin(request, job_id).pk)
        return Response(RunOutput(job).data)


class AutomaticRunResumeApi(APIView):
    @extend_schema(
        operation_id="automatic_runs_resume", request=RunResumeInput, responses={202: RunOutput}
    )
    def post(self, request: Request, job_id: int) -> Response:
        """Continue a cancelled, failed or finished run with its pinned version and settings."""
        job = _run_for_admin(request, job_id)
        data = RunResumeInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = automatic_resume(job_id=job.pk, retry_failed=data.validated_data["retry_failed"])
        return Response(RunOutput(job).data, status=status.HTTP_202_ACCEPTED)
