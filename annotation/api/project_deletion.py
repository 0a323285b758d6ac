"""``DELETE /api/projects/{id}/?confirm=<name>`` (project admins): the project and everything in
it; the job deletes its files behind the answer (annotation.services.project_deletion)."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.models import Project
from annotation.permissions import acting_user, require_admin
from annotation.services.project_deletion import project_delete
from engine.api.common import ErrorOutput


class ProjectDeletedOutput(serializers.Serializer[Any]):
    job = serializers.IntegerField(help_text="the deletion's job (kind delete_project)")
    name = serializers.CharField()
    images = serializers.IntegerField()
    masks = serializers.IntegerField()
    versions = serializers.IntegerField(help_text="model versions deleted")


CONFIRM = OpenApiParameter(
    "confirm", OpenApiTypes.STR, required=True, description="the project's exact name"
)
DELETION_RESPONSES = {
    200: ProjectDeletedOutput,
    400: OpenApiResponse(ErrorOutput, description="`deletion_refused`: confirm is not the name"),
    403: OpenApiResponse(ErrorOutput, description="not an admin of the project"),
    409: OpenApiResponse(ErrorOutput, description="a job of the project is queued or running"),
}


def project_deletion_response(*, request: Request, project: Project) -> Response:
    require_admin(user=request.user, project=project)
    deleted = project_delete(
        project=project,
        confirm=request.query_params.get("confirm"),
        user=acting_user(request.user),
    )
    body = {
        "job": deleted.job.pk,
        "name": deleted.name,
        "images": deleted.images,
        "masks": deleted.masks,
        "versions": deleted.versions,
    }
    return Response(ProjectDeletedOutput(body).data)
