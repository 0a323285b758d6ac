"""Skipping an image (annotators: ``POST /api/images/{id}/skip/``) and putting done or skipped
images back in the queue (reviewers: ``POST /api/projects/{id}/images/reopen/``); see
annotation.services.leases."""

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.image_removal import ImageIdsInput
from annotation.api.images import ImageOutput
from annotation.permissions import ANNOTATOR, REVIEWER, acting_user, has_role, require_role
from annotation.selectors.projects import image_get_for_user, project_get_for_user
from annotation.services.leases import SKIP_REASON_MAX, image_skip, images_reopen
from engine.api.common import ErrorOutput


class ImageSkipInput(serializers.Serializer[Any]):
    reason = serializers.CharField(
        max_length=SKIP_REASON_MAX,
        help_text="why the image cannot be annotated (blurry, out of scope, duplicate...)",
    )


class ImagesReopenedOutput(serializers.Serializer[Any]):
    reopened = serializers.IntegerField(help_text="images put back to todo (todo ones are left)")


class ImageSkipApi(APIView):
    @extend_schema(
        operation_id="images_skip",
        request=ImageSkipInput,
        responses={
            200: ImageOutput,
            400: OpenApiResponse(ErrorOutput, description="no reason, or a reason too long"),
            409: OpenApiResponse(
                ErrorOutput,
                description="`lease_taken`: someone else holds the image; `conflict`: an "
                "annotator skipping a done image",
            ),
        },
    )
    def post(self, request: Request, image_id: int) -> Response:
        """Set the image aside as unusable, with a reason: it is no longer handed out, and its
        masks stay out of exports and rounds until a reviewer reopens it. Annotators skip
        todo images; reviewers and admins done ones too."""
        image = image_get_for_user(user=request.user, image_id=image_id)
        require_role(user=request.user, project=image.project, role=ANNOTATOR)
        data = ImageSkipInput(data=request.data)
        data.is_valid(raise_exception=True)
        skipped = image_skip(
            image=image,
            user=acting_user(request.user),
            reason=data.validated_data["reason"],
            may_skip_done=has_role(user=request.user, project=image.project, role=REVIEWER),
        )
        return Response(ImageOutput(skipped).data)


class ImagesReopenApi(APIView):
    @extend_schema(
        operation_id="images_reopen",
        request=ImageIdsInput,
        responses={
            200: ImagesReopenedOutput,
            400: OpenApiResponse(ErrorOutput, description="a malformed id list"),
            403: OpenApiResponse(ErrorOutput, description="not a reviewer of the project"),
            404: OpenApiResponse(ErrorOutput, description="ids that are not images of the project"),
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        """Put done or skipped images back to todo: "next image" hands them out again (their
        masks are kept; a skip's reason is cleared)."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, role=REVIEWER)
        data = ImageIdsInput(data=request.data)
        data.is_valid(raise_exception=True)
        count = images_reopen(project=project, image_ids=data.validated_data["image_ids"])
        return Response(ImagesReopenedOutput({"reopened": count}).data)
