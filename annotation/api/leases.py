"""The annotator's image queue: next image (with a lease), renew/take or release a lease,
mark an image done."""

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.ids import IdField
from annotation.api.images import ImageOutput
from annotation.api.masks import MaskOutput
from annotation.models import Image, ImageLease
from annotation.permissions import ANNOTATOR, acting_user, require_role
from annotation.selectors.projects import (
    image_accepted_masks,
    image_get_for_user,
    project_get_for_user,
)
from annotation.services.leases import (
    image_lease_release,
    image_lease_take,
    image_mark_done,
    image_next_for_user,
)

MAX_SKIP = 1000


class WorkImageOutput(ImageOutput):
    """An image as the tool opens it: with its accepted masks."""

    masks = serializers.SerializerMethodField()

    class Meta(ImageOutput.Meta):
        fields = [*ImageOutput.Meta.fields, "masks"]
        read_only_fields = fields

    @extend_schema_field(MaskOutput(many=True))
    def get_masks(self, image: Image) -> list[dict[str, Any]]:
        return list(MaskOutput(image_accepted_masks(image=image), many=True).data)


class LeaseOutput(serializers.Serializer[Any]):
    expires_at = serializers.DateTimeField()
    seconds = serializers.IntegerField(help_text="seconds left until the lease expires")


class LeasedImageOutput(serializers.Serializer[Any]):
    image = WorkImageOutput()
    lease = LeaseOutput()


class NextImageInput(serializers.Serializer[Any]):
    skip = serializers.ListField(
        child=IdField(),
        required=False,
        default=list,
        max_length=MAX_SKIP,
        help_text="ids of images to pass over (your leases on them are released)",
    )


def _lease(lease: ImageLease) -> dict[str, Any]:
    left = (lease.expires_at - timezone.now()).total_seconds()
    return {"expires_at": lease.expires_at, "seconds": max(0, round(left))}


class NextImageApi(APIView):
    @extend_schema(
        operation_id="images_next",
        request=NextImageInput,
        responses={
            200: LeasedImageOutput,
            204: OpenApiResponse(description="no image needs work"),
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        """Your unexpired lease first (resumed), else the lowest-id todo image nobody holds,
        leased to you for ``MASKLOOP_LEASE_SECONDS``."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, role=ANNOTATOR)
        data = NextImageInput(data=request.data)
        data.is_valid(raise_exception=True)
        lease = image_next_for_user(
            project=project, user=acting_user(request.user), skip=data.validated_data["skip"]
        )
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        body = {"image": lease.image, "lease": _lease(lease)}
        return Response(LeasedImageOutput(body).data)


class ImageLeaseApi(APIView):
    @extend_schema(operation_id="image_lease_take", request=None, responses={200: LeaseOutput})
    def post(self, request: Request, image_id: int) -> Response:
        """Take or renew your lease on the image; 409 ``lease_taken`` if another user holds it."""
        image = image_get_for_user(user=request.user, image_id=image_id)
        require_role(user=request.user, project=image.project, role=ANNOTATOR)
        lease = image_lease_take(image=image, user=acting_user(request.user))
        return Response(LeaseOutput(_lease(lease)).data)

    @extend_schema(operation_id="image_lease_release", request=None, responses={204: None})
    def delete(self, request: Request, image_id: int) -> Response:
        """Release your lease on the image (another user's lease is left alone)."""
        image = image_get_for_user(user=request.user, image_id=image_id)
        require_role(user=request.user, project=image.project, role=ANNOTATOR)
        image_lease_release(image=image, user=acting_user(request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ImageDoneApi(APIView):
    @extend_schema(operation_id="images_mark_done", request=None, responses={200: ImageOutput})
    def post(self, request: Request, image_id: int) -> Response:
        """Mark the image done and release its lease; 409 ``lease_taken`` if another user
        holds it."""
        image = image_get_for_user(user=request.user, image_id=image_id)
        require_role(user=request.user, project=image.project, role=ANNOTATOR)
        done = image_mark_done(image=image, user=acting_user(request.user))
        return Response(ImageOutput(done).data)
