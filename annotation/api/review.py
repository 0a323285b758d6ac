"""Review (reviewers and admins): the queue of images with unreviewed masks, a decision per
mask (reject with a reason, approve, or fix with new pixels), approving an image's masks at
once, and taking verdicts back (undo)."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.ids import IdField
from annotation.api.images import ImageOutput
from annotation.api.masks import MaskOutput, MaskPixelsInput
from annotation.models import Image, Mask
from annotation.permissions import REVIEWER, acting_user, require_role
from annotation.selectors.projects import (
    image_get_for_user,
    mask_get_for_user,
    project_get_for_user,
)
from annotation.selectors.review import review_queue
from annotation.services.review import (
    MAX_MASKS_PER_APPROVAL,
    REASON_MAX,
    image_masks_approve,
    image_masks_unreview,
    mask_approve,
    mask_fix,
    mask_reject,
)


class ReviewItemOutput(serializers.Serializer[Any]):
    image = serializers.SerializerMethodField()
    masks = serializers.SerializerMethodField()

    @extend_schema_field(ImageOutput)
    def get_image(self, image: Image) -> dict[str, Any]:
        return dict(ImageOutput(image).data)

    @extend_schema_field(MaskOutput(many=True))
    def get_masks(self, image: Image) -> list[dict[str, Any]]:
        masks: list[Mask] = getattr(image, "review_masks", [])
        return list(MaskOutput(masks, many=True).data)


class ReviewQueueInput(serializers.Serializer[Any]):
    annotator = IdField(required=False, help_text="only images with this user's pending masks")
    category = IdField(
        required=False, help_text="only images with pending masks of this category (its id)"
    )


class ReviewQueueApi(generics.ListAPIView[Image]):
    """Images with accepted masks nobody reviewed yet, in id order, each with all its
    accepted masks (``reviewed_at`` null for the pending ones)."""

    serializer_class = ReviewItemOutput

    def get_queryset(self) -> QuerySet[Image]:
        if getattr(self, "swagger_fake_view", False):
            return Image.objects.none()
        project = project_get_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        require_role(user=self.request.user, project=project, role=REVIEWER)
        data = ReviewQueueInput(data=self.request.query_params)
        data.is_valid(raise_exception=True)
        return review_queue(
            project=project,
            annotator_id=data.validated_data.get("annotator"),
            category_id=data.validated_data.get("category"),
        )

    @extend_schema(operation_id="review_queue", parameters=[ReviewQueueInput])
    def get(self, *args: Any, **kwargs: Any) -> Any:
        return super().get(*args, **kwargs)


class MaskRejectInput(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=REASON_MAX, help_text="why, for the annotator")


def _reviewable(request: Request, mask_id: int) -> Mask:
    mask = mask_get_for_user(user=request.user, mask_id=mask_id)
    require_role(user=request.user, project=mask.project, role=REVIEWER)
    return mask


class MaskRejectApi(APIView):
    @extend_schema(
        operation_id="masks_reject", request=MaskRejectInput, responses={200: MaskOutput}
    )
    def post(self, request: Request, mask_id: int) -> Response:
        """Reject the mask with a reason: it leaves exports and training."""
        mask = _reviewable(request, mask_id)
        data = MaskRejectInput(data=request.data)
        data.is_valid(raise_exception=True)
        rejected = mask_reject(
            mask=mask, reviewer=acting_user(request.user), reason=data.validated_data["reason"]
        )
        return Response(MaskOutput(rejected).data)


class MaskApproveApi(APIView):
    @extend_schema(operation_id="masks_approve", request=None, responses={200: MaskOutput})
    def post(self, request: Request, mask_id: int) -> Response:
        """Approve the mask (accepted, reviewed); also takes back a rejection."""
        mask = _reviewable(request, mask_id)
        approved = mask_approve(mask=mask, reviewer=acting_user(request.user))
        return Response(MaskOutput(approved).data)


class MaskFixApi(APIView):
    @extend_schema(operation_id="masks_fix", request=MaskPixelsInput, responses={200: MaskOutput})
    def post(self, request: Request, mask_id: int) -> Response:
        """Replace the mask's pixels (``rle`` or ``png``); it is accepted and reviewed."""
        mask = _reviewable(request, mask_id)
        data = MaskPixelsInput(data=request.data)
        data.is_valid(raise_exception=True)
        fixed = mask_fix(
            mask=mask,
            reviewer=acting_user(request.user),
            rle=data.validated_data.get("rle"),
            png=data.validated_data.get("png"),
        )
        return Response(MaskOutput(fixed).data)


class ImageMasksInput(serializers.Serializer[Any]):
    mask_ids = serializers.ListField(
        child=IdField(),
        allow_empty=False,
        max_length=MAX_MASKS_PER_APPROVAL,
        help_text="masks of the image the reviewer saw (approve) or decided on (undo), at most "
        f"{MAX_MASKS_PER_APPROVAL}",
    )


class UnchangedMaskOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    status = serializers.CharField(help_text="its status now (why it was left alone)")


class ImageApproveOutput(serializers.Serializer[Any]):
    approved = MaskOutput(many=True)
    unchanged = UnchangedMaskOutput(many=True)


def _image_for_review(request: Request, image_id: int) -> tuple[Image, list[int]]:
    image = image_get_for_user(user=request.user, image_id=image_id)
    require_role(user=request.user, project=image.project, role=REVIEWER)
    data = ImageMasksInput(data=request.data)
    data.is_valid(raise_exception=True)
    return image, list(data.validated_data["mask_ids"])


def _unchanged(masks: list[Mask]) -> list[dict[str, Any]]:
    return [{"id": mask.pk, "status": mask.status} for mask in masks]


class ImageApproveApi(APIView):
    @extend_schema(
        operation_id="image_masks_approve",
        request=ImageMasksInput,
        responses={200: ImageApproveOutput},
    )
    def post(self, request: Request, image_id: int) -> Response:
        """Approve the listed masks of the image at once; those no longer accepted stay as
        they are (``unchanged``). Ids that are not the image's masks: 400, nothing changed."""
        image, mask_ids = _image_for_review(request, image_id)
        approved, unchanged = image_masks_approve(
            image=image, reviewer=acting_user(request.user), mask_ids=mask_ids
        )
        return Response(
            {"approved": MaskOutput(approved, many=True).data, "unchanged": _unchanged(unchanged)}
        )


class ImageUnreviewOutput(serializers.Serializer[Any]):
    returned = MaskOutput(many=True, help_text="back in the queue, accepted and undecided")
    unchanged = UnchangedMaskOutput(many=True)


class ImageUnreviewApi(APIView):
    @extend_schema(
        operation_id="image_masks_unreview",
        request=ImageMasksInput,
        responses={200: ImageUnreviewOutput},
    )
    def post(self, request: Request, image_id: int) -> Response:
        """Take back your own verdicts on the listed masks of the image (undo): each goes back
        to the queue accepted and undecided; a fix keeps its pixels. Masks another reviewer
        decided on, or nobody did, are left alone (``unchanged``)."""
        image, mask_ids = _image_for_review(request, image_id)
        returned, unchanged = image_masks_unreview(
            image=image, reviewer=acting_user(request.user), mask_ids=mask_ids
        )
        return Response(
            {"returned": MaskOutput(returned, many=True).data, "unchanged": _unchanged(unchanged)}
        )
