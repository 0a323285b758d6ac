"""Retrain rounds over REST (project admins only; outsiders get 404, other members 403).

- ``GET/POST /api/projects/{id}/rounds/``: list (newest first, without loss curves) / launch;
- ``GET /api/projects/{id}/rounds/{n}/``: one round with progress and its live loss curve;
- ``POST /api/projects/{id}/rounds/{n}/cancel/``;
- ``GET/PUT /api/projects/{id}/round-settings/``: training defaults, auto-promotion, schedules.
"""

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.ids import IdField
from annotation.models import Project
from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import project_get_for_user
from engine.api.common import ErrorOutput
from engine.models import ModelVersion
from training.loop.optim import SCOPES
from training.models import RoundSettings, TrainingRound
from training.selectors import round_get, round_settings_get, rounds_for_project
from training.services.round_limits import serializer_bounds
from training.services.rounds import RoundRefused, round_cancel, round_launch
from training.services.schedule import EDITABLE, round_settings_update


def _admin_project(request: Request, project_id: int) -> Project:
    user = acting_user(request.user)
    project = project_get_for_user(user=user, project_id=project_id)
    require_admin(user=user, project=project)
    return project


class RoundOutput(serializers.ModelSerializer[TrainingRound]):
    status = serializers.CharField(source="job.status", read_only=True)
    job = serializers.IntegerField(source="job_id", read_only=True)
    progress = serializers.FloatField(source="job.progress", read_only=True, allow_null=True)
    step = serializers.IntegerField(source="job.progress_done", read_only=True)
    total_steps = serializers.IntegerField(
        source="job.progress_total", read_only=True, allow_null=True
    )
    message = serializers.CharField(source="job.message", read_only=True)
    error = serializers.CharField(source="job.error", read_only=True)
    started_at = serializers.DateTimeField(source="job.started_at", read_only=True)
    finished_at = serializers.DateTimeField(source="job.finished_at", read_only=True)
    parent_version = serializers.IntegerField(source="parent_version_id", read_only=True)
    produced_version = serializers.IntegerField(
        source="produced_version_id", read_only=True, allow_null=True
    )
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True, default=None
    )
    validation = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRound
        fields = [
            "id",
            "number",
            "status",
            "job",
            "progress",
            "step",
            "total_steps",
            "message",
            "error",
            "parent_version",
            "produced_version",
            "train_masks",
            "train_images",
            "validation_masks",
            "validation_images",
            "config",
            "parent_metrics",
            "validation",
            "trigger",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_validation(self, training_round: TrainingRound) -> dict[str, Any] | None:
        """The produced version's validation metrics (null until the round succeeded)."""
        version: ModelVersion | None = training_round.produced_version
        return None if version is None else version.metrics.get("validation")


class RoundDetailOutput(RoundOutput):
    class Meta(RoundOutput.Meta):
        fields = [*RoundOutput.Meta.fields, "loss_curve"]
        read_only_fields = fields


class RoundLaunchInput(serializers.Serializer[Any]):
    parent_version = IdField(
        required=False, help_text="the version to train from (default: the deployed one)"
    )
    # The ranges of the round settings (training.services.round_limits), which the launch
    # service checks again for callers other than this API.
    steps = serializers.IntegerField(required=False, **serializer_bounds("steps"))
    scope = serializers.ChoiceField(choices=list(SCOPES), required=False)
    lr = serializers.FloatField(required=False, **serializer_bounds("lr"))
    masks_per_image = serializers.IntegerField(
        required=False, **serializer_bounds("masks_per_image")
    )
    augment = serializers.BooleanField(
        required=False,
        help_text="train on images turned by random 90-degree rotations and mirrors (scope full)",
    )


class RoundSettingsIO(serializers.ModelSerializer[RoundSettings]):
    class Meta:
        model = RoundSettings
        fields = list(EDITABLE)


class ProjectRoundListApi(APIView):
    @extend_schema(operation_id="rounds_list", responses={200: RoundOutput(many=True)})
    def get(self, request: Request, project_id: int) -> Response:
        project = _admin_project(request, project_id)
        return Response(RoundOutput(rounds_for_project(project=project)[:200], many=True).data)

    @extend_schema(
        operation_id="rounds_launch",
        request=RoundLaunchInput,
        responses={
            201: RoundDetailOutput,
            400: OpenApiResponse(ErrorOutput, description="too_few_masks (with needed), ..."),
            409: OpenApiResponse(ErrorOutput, description="round_active"),
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = _admin_project(request, project_id)
        data = RoundLaunchInput(data=request.data)
        data.is_valid(raise_exception=True)
        options = dict(data.validated_data)
        parent = None
        if "parent_version" in options:
            parent_id = options.pop("parent_version")
            parent = ModelVersion.objects.filter(pk=parent_id, project=project).first()
            if parent is None:
                raise RoundRefused(f"project {project.name!r} has no model version {parent_id}")
        training_round = round_launch(
            project=project, user=acting_user(request.user), overrides=options, parent=parent
        )
        fresh = round_get(project=project, number=training_round.number)
        return Response(RoundDetailOutput(fresh).data, status=status.HTTP_201_CREATED)


class ProjectRoundDetailApi(APIView):
    @extend_schema(operation_id="rounds_retrieve", responses={200: RoundDetailOutput})
    def get(self, request: Request, project_id: int, number: int) -> Response:
        project = _admin_project(request, project_id)
        return Response(RoundDetailOutput(round_get(project=project, number=number)).data)


class ProjectRoundCancelApi(APIView):
    @extend_schema(operation_id="rounds_cancel", request=None, responses={200: RoundDetailOutput})
    def post(self, request: Request, project_id: int, number: int) -> Response:
        project = _admin_project(request, project_id)
        training_round = round_cancel(training_round=round_get(project=project, number=number))
        return Response(RoundDetailOutput(training_round).data)


class ProjectRoundSettingsApi(APIView):
    @extend_schema(operation_id="round_settings_retrieve", responses={200: RoundSettingsIO})
    def get(self, request: Request, project_id: int) -> Response:
        project = _admin_project(request, project_id)
        return Response(RoundSettingsIO(round_settings_get(project=project)).data)

    @extend_schema(
        operation_id="round_settings_update",
        request=RoundSettingsIO,
        responses={200: RoundSettingsIO, 400: ErrorOutput},
    )
    def put(self, request: Request, project_id: int) -> Response:
        project = _admin_project(request, project_id)
        data = RoundSettingsIO(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        updated = round_settings_update(project=project, values=dict(data.validated_data))
        return Response(RoundSettingsIO(updated).data)
