"""Projects: list (with counts), create (staff and superusers), retrieve, update and move
between the data engine's stages (admins)."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.project_deletion import (
    CONFIRM,
    DELETION_RESPONSES,
    project_deletion_response,
)
from annotation.models import Project, Stage
from annotation.permissions import CanCreateProjects, acting_user, require_admin
from annotation.selectors.projects import (
    project_get_for_user,
    project_get_with_stats,
    projects_with_stats,
)
from annotation.services.projects import project_create, project_stage_change, project_update
from engine.api import JobOutput
from engine.models import ModelVersion


class DeployedVersionOutput(serializers.ModelSerializer[ModelVersion]):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "arch"]
        read_only_fields = fields


class ProjectOutput(serializers.ModelSerializer[Project]):
    deployed_version = DeployedVersionOutput(read_only=True, allow_null=True)
    images_total = serializers.IntegerField(source="image_count", read_only=True)
    images_done = serializers.IntegerField(read_only=True)
    images_skipped = serializers.IntegerField(
        read_only=True, help_text="set aside as unusable (not in images_done)"
    )
    masks_accepted = serializers.IntegerField(source="accepted_mask_count", read_only=True)
    # The older names of images_total and masks_accepted, kept for existing clients.
    image_count = serializers.IntegerField(read_only=True)
    accepted_mask_count = serializers.IntegerField(read_only=True)
    my_masks_today = serializers.IntegerField(read_only=True)
    my_role = serializers.CharField(read_only=True, allow_null=True)

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "description",
            "stage",
            "deployed_version",
            "created_at",
            "images_total",
            "images_done",
            "images_skipped",
            "masks_accepted",
            "image_count",
            "accepted_mask_count",
            "my_masks_today",
            "my_role",
        ]
        read_only_fields = fields


class ProjectCreateInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    stage = serializers.ChoiceField(choices=Stage.choices, default=Stage.ASSISTED_MANUAL)


class ProjectUpdateInput(serializers.Serializer[Any]):
    """Fields a project admin may change; validated with ``partial=True``, so each is optional."""

    name = serializers.CharField(max_length=200)
    description = serializers.CharField(allow_blank=True)


class ProjectListCreateApi(generics.ListAPIView[Project]):
    """GET: the projects the caller can see. POST: create one (staff and superusers)."""

    serializer_class = ProjectOutput
    permission_classes = [CanCreateProjects]

    def get_queryset(self) -> QuerySet[Project]:
        return projects_with_stats(user=self.request.user)

    @extend_schema(operation_id="projects_list")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="projects_create",
        request=ProjectCreateInput,
        responses={201: ProjectOutput},
    )
    def post(self, request: Request) -> Response:
        data = ProjectCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        project = project_create(creator=acting_user(request.user), **data.validated_data)
        output = project_get_with_stats(user=request.user, project_id=project.pk)
        return Response(ProjectOutput(output).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    """GET: one project with its counts. PATCH: rename it or change its description (admins).
    DELETE: the project and everything in it (admins, ``?confirm=<name>``)."""

    @extend_schema(operation_id="projects_retrieve", responses={200: ProjectOutput})
    def get(self, request: Request, project_id: int) -> Response:
        project = project_get_with_stats(user=request.user, project_id=project_id)
        return Response(ProjectOutput(project).data)

    @extend_schema(
        operation_id="projects_partial_update",
        request=ProjectUpdateInput,
        responses={200: ProjectOutput},
    )
    def patch(self, request: Request, project_id: int) -> Response:
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        data = ProjectUpdateInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project_update(project=project, **data.validated_data)
        output = project_get_with_stats(user=request.user, project_id=project.pk)
        return Response(ProjectOutput(output).data)

    @extend_schema(
        operation_id="projects_destroy",
        parameters=[CONFIRM],
        request=None,
        responses=DELETION_RESPONSES,
    )
    def delete(self, request: Request, project_id: int) -> Response:
        """Delete the project with its images, masks, models and files (cannot be undone)."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        return project_deletion_response(request=request, project=project)


class ProjectStageInput(serializers.Serializer[Any]):
    stage = serializers.ChoiceField(
        choices=Stage.choices,
        help_text="assisted_manual, semi_automatic (needs a deployed model version; prefills "
        "the todo images) or fully_automatic",
    )


class ProjectStageOutput(serializers.Serializer[Any]):
    project = ProjectOutput()
    previous_stage = serializers.CharField(help_text="the stage the project was in")
    changed = serializers.BooleanField(help_text="false when the project was in that stage")
    prefill_job = JobOutput(allow_null=True, help_text="the prefill run the change started")


class ProjectStageApi(APIView):
    """Move a project between assisted-manual, semi-automatic and fully-automatic (admins)."""

    @extend_schema(
        operation_id="projects_stage_set",
        request=ProjectStageInput,
        responses={200: ProjectStageOutput},
        description="Project admins only (403 otherwise). 400 for an unknown stage; 409 "
        "`no_deployed_version` for semi_automatic without a deployed model. Entering "
        "semi_automatic starts a prefill run over the todo images not prefilled yet "
        "(`prefill_job`). The change is recorded (who, when) in the project's history.",
    )
    def patch(self, request: Request, project_id: int) -> Response:
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        data = ProjectStageInput(data=request.data)
        data.is_valid(raise_exception=True)
        change = project_stage_change(
            project=project, stage=data.validated_data["stage"], user=acting_user(request.user)
        )
        body = {
            "project": project_get_with_stats(user=request.user, project_id=project.pk),
            "previous_stage": change.previous,
            "changed": change.previous != change.project.stage,
            "prefill_job": change.prefill_job,
        }
        return Response(ProjectStageOutput(body).data)

    @extend_schema(
        operation_id="projects_stage_set_post",
        request=ProjectStageInput,
        responses={200: ProjectStageOutput},
        description="The same as PATCH, for clients that only POST.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        return self.patch(request, project_id)
