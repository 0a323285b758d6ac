"""Removing images (project admins): one with ``DELETE /api/images/{id}/``, many with
``POST /api/projects/{id}/images/remove/``. Rows and masks go at once; the job deletes the
files behind the answer (annotation.services.image_removal)."""

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.ids import IdField
from annotation.models import Image, Project
from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import project_get_for_user
from annotation.services.image_removal import images_remove
from annotation.services.image_sets import MAX_IMAGES_PER_REQUEST
from engine.api.common import ErrorOutput


class ImageIdsInput(serializers.Serializer[Any]):
    """A set of a project's images (remove, reopen)."""

    image_ids = serializers.ListField(
        child=IdField(),
        allow_empty=False,
        max_length=MAX_IMAGES_PER_REQUEST,
        help_text=f"ids of the project's images, at most {MAX_IMAGES_PER_REQUEST}",
    )


class ImagesRemovedOutput(serializers.Serializer[Any]):
    job = serializers.IntegerField(help_text="the removal's job (kind remove_images)")
    images = serializers.IntegerField(help_text="images removed")
    masks = serializers.IntegerField(help_text="their masks deleted (every status)")


REMOVAL_RESPONSES = {
    200: ImagesRemovedOutput,
    400: OpenApiResponse(ErrorOutput, description="`removal_refused`: a malformed id list"),
    403: OpenApiResponse(ErrorOutput, description="not an admin of the project"),
    404: OpenApiResponse(ErrorOutput, description="ids that are not images of the project"),
    409: OpenApiResponse(
        ErrorOutput, description="a round, automatic run, export or import of the project runs"
    ),
}


def removal_response(*, request: Request, project: Project, image_ids: object) -> Response:
    require_admin(user=request.user, project=project)
    removed = images_remove(project=project, image_ids=image_ids, user=acting_user(request.user))
    body = {"job": removed.job.pk, "images": removed.images, "masks": removed.masks}
    return Response(ImagesRemovedOutput(body).data)


def image_delete_response(*, request: Request, image: Image) -> Response:
    return removal_response(request=request, project=image.project, image_ids=[image.pk])


class ImagesRemoveApi(APIView):
    @extend_schema(operation_id="images_remove", request=ImageIdsInput, responses=REMOVAL_RESPONSES)
    def post(self, request: Request, project_id: int) -> Response:
        """Remove images of the project with their masks and files (cannot be undone)."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        data = ImageIdsInput(data=request.data)
        data.is_valid(raise_exception=True)
        return removal_response(
            request=request, project=project, image_ids=data.validated_data["image_ids"]
        )
