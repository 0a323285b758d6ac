"""Promotion over REST: project admins promote a version or roll back; any member asks which
version is live (the tool polls it); reviewers and admins read the data-engine dashboard."""

from typing import Any

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.permissions import REVIEWER, acting_user, require_admin, require_role
from annotation.selectors.projects import project_get_for_user
from engine.api.common import ErrorOutput, ModelVersionSummary
from engine.api.model_versions import ModelVersionOutput
from engine.models import Deployment, ModelVersion
from engine.selectors import model_version_for_project
from training.selectors_dashboard import project_dashboard
from training.services.promotion import version_promote, version_rollback


class PromotionInput(serializers.Serializer[Any]):
    reason = serializers.CharField(required=False, default="", allow_blank=True, max_length=500)


class DeploymentOutput(serializers.ModelSerializer[Deployment]):
    version = ModelVersionOutput(read_only=True)
    previous_version = serializers.PrimaryKeyRelatedField[ModelVersion](
        read_only=True, allow_null=True
    )
    user = serializers.SlugRelatedField[Any](slug_field="username", read_only=True)

    class Meta:
        model = Deployment
        fields = ["id", "action", "version", "previous_version", "user", "reason", "created_at"]
        read_only_fields = fields


class LiveVersionOutput(serializers.Serializer[Any]):
    deployed_version = ModelVersionSummary(allow_null=True)
    round = serializers.IntegerField(allow_null=True, help_text="the round that made it, if any")


_REFUSALS = {
    403: OpenApiResponse(ErrorOutput, description="not an admin of the project"),
    404: OpenApiResponse(ErrorOutput, description="no such project or version of yours"),
    400: OpenApiResponse(ErrorOutput, description="`deploy_refused` (the version is retired)"),
    409: OpenApiResponse(
        ErrorOutput,
        description="`promotion_refused` (deployed already, nothing to roll back to)",
    ),
}


def _deployment_output(version: ModelVersion) -> dict[str, Any]:
    deployment = (
        Deployment.objects.filter(version=version)
        .select_related("version__project", "user")
        .order_by("-id")
        .first()
    )
    return dict(DeploymentOutput(deployment).data)


class VersionPromoteApi(APIView):
    @extend_schema(
        operation_id="model_versions_promote",
        request=PromotionInput,
        responses={200: DeploymentOutput, **_REFUSALS},
    )
    def post(self, request: Request, project_id: int, version_id: int) -> Response:
        """Deploy this version in the project (atomically); every process serves it from its
        next request, and its embeddings are queued (images in progress first)."""
        user = acting_user(request.user)
        project = project_get_for_user(user=user, project_id=project_id)
        require_admin(user=user, project=project)
        version = model_version_for_project(project=project, version_id=version_id)
        if version is None:
            raise Http404("no such model version in this project")
        data = PromotionInput(data=request.data)
        data.is_valid(raise_exception=True)
        version_promote(version=version, user=user, reason=data.validated_data["reason"])
        return Response(_deployment_output(version))


class VersionRollbackApi(APIView):
    @extend_schema(
        operation_id="model_versions_rollback",
        request=PromotionInput,
        responses={200: DeploymentOutput, **_REFUSALS},
    )
    def post(self, request: Request, project_id: int) -> Response:
        """Deploy again the version the live one replaced when it was promoted."""
        user = acting_user(request.user)
        project = project_get_for_user(user=user, project_id=project_id)
        require_admin(user=user, project=project)
        data = PromotionInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = version_rollback(project=project, user=user, reason=data.validated_data["reason"])
        return Response(_deployment_output(version))


class DeployedVersionApi(APIView):
    @extend_schema(operation_id="projects_deployed_version", responses={200: LiveVersionOutput})
    def get(self, request: Request, project_id: int) -> Response:
        """The version the project serves now (one query; the tool polls it)."""
        project = project_get_for_user(user=acting_user(request.user), project_id=project_id)
        deployed = project.deployed_version
        if deployed is not None and deployed.status != ModelVersion.Status.READY:
            deployed = None
        summary = None if deployed is None else ModelVersionSummary(deployed).data
        return Response(
            {"deployed_version": summary, "round": None if deployed is None else deployed.round}
        )


class DashboardApi(APIView):
    @extend_schema(operation_id="projects_dashboard", responses={200: OpenApiResponse()})
    def get(self, request: Request, project_id: int) -> Response:
        """Per round (model version; imported ones are round 0): annotation speed with it,
        validation figures, training seconds; the lineage and every deployment."""
        user = acting_user(request.user)
        project = project_get_for_user(user=user, project_id=project_id)
        require_role(user=user, project=project, role=REVIEWER)
        return Response(project_dashboard(project=project))
