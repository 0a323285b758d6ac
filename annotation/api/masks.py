"""Masks: list per project or per image (filtered by status, source, stage, annotator),
accept one in the tool (with provenance and timing), edit one's pixels, delete one."""

from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.ids import IdField
from annotation.models import Category, Image, Mask, Stage
from annotation.permissions import ANNOTATOR, acting_user, require_role
from annotation.selectors.projects import (
    image_get_for_user,
    mask_get_for_user,
    project_get_for_user,
    project_masks,
)
from annotation.services.mask_edit import mask_edit
from annotation.services.masks import MAX_COUNT, MAX_SECONDS, mask_accept, mask_delete
from engine.models import ModelVersion


@extend_schema_serializer(component_name="CocoRle")
class RleOutput(serializers.Serializer[Any]):
    size = serializers.ListField(child=serializers.IntegerField(), help_text="[height, width]")
    counts = serializers.CharField(help_text="compressed COCO RLE counts")


class MaskOutput(serializers.ModelSerializer[Mask]):
    image = serializers.PrimaryKeyRelatedField[Image](read_only=True)
    model_version = serializers.PrimaryKeyRelatedField[ModelVersion](
        read_only=True, allow_null=True
    )
    annotator = serializers.PrimaryKeyRelatedField[User](read_only=True, allow_null=True)
    reviewed_by = serializers.PrimaryKeyRelatedField[User](read_only=True, allow_null=True)
    edited_by = serializers.PrimaryKeyRelatedField[User](read_only=True, allow_null=True)
    category = serializers.PrimaryKeyRelatedField[Category](
        read_only=True, allow_null=True, help_text="the mask's category id; null: none"
    )
    segmentation = RleOutput(source="rle", read_only=True)
    bbox = serializers.ListField(child=serializers.FloatField(), help_text="[x, y, w, h]")
    point_coords = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()), allow_null=True
    )
    crop_box = serializers.ListField(child=serializers.FloatField(), allow_null=True)

    class Meta:
        model = Mask
        fields = [
            "id",
            "image",
            "segmentation",
            "bbox",
            "area",
            "stage",
            "source",
            "status",
            "model_version",
            "annotator",
            "prompts",
            "seconds_spent",
            "clicks",
            "brush_strokes",
            "predicted_iou",
            "stability_score",
            "point_coords",
            "crop_box",
            "idempotency_key",
            "reviewed_by",
            "reviewed_at",
            "rejection_reason",
            "edit_count",
            "edited_by",
            "edited_at",
            "category",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


@extend_schema_field(RleOutput)
class RleField(serializers.JSONField):
    """A COCO RLE ``{"size": [h, w], "counts": str}``, checked by the service (400
    ``invalid_mask`` when malformed) rather than here, so every mask error has one code."""


class MaskPixelsInput(serializers.Serializer[Any]):
    """The mask itself: exactly one of ``rle`` or ``png``."""

    rle = RleField(required=False, allow_null=True, help_text="COCO RLE of the image's size")
    png = serializers.CharField(
        required=False,
        allow_null=True,
        trim_whitespace=False,
        help_text="base64 of a 1-bit or 8-bit greyscale PNG of the image's size; "
        "non-zero pixels are the mask",
    )


class MaskAcceptInput(MaskPixelsInput):
    # "source" shadows Field.source for the type checker only; DRF collects declared fields.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=[Mask.Source.ASSISTED, Mask.Source.MANUAL],
        help_text="assisted: model prompts were used; manual: drawn with the brush only",
    )
    model_version = IdField(
        required=False,
        allow_null=True,
        help_text="the model version that assisted (of this project; a deleted one is "
        "stored as null)",
    )
    prompts = serializers.JSONField(
        required=False, default=dict, help_text="free JSON: points, labels, box, history"
    )
    # The service's bounds, checked here so that each field answers one code (invalid).
    clicks = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_COUNT
    )
    brush_strokes = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_COUNT
    )
    seconds_spent = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=0.0,
        max_value=MAX_SECONDS,
        help_text="active seconds from the first prompt to accept, measured by the client "
        "(idle time capped), 0 to 86400",
    )
    idempotency_key = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=100,
        help_text="a client-made unique key: a retried accept returns the stored row",
    )
    category = IdField(
        required=False, allow_null=True, help_text="a category of the project; null or absent: none"
    )


class MaskEditInput(MaskPixelsInput):
    """New pixels for an accepted mask, with the effort the edit took (added to the mask's),
    and/or a new category (then the pixels may be left out)."""

    category = IdField(
        required=False,
        allow_null=True,
        help_text="a category of the project, or null to take the mask's off; absent: unchanged",
    )

    clicks = serializers.IntegerField(required=False, default=0, min_value=0, max_value=MAX_COUNT)
    brush_strokes = serializers.IntegerField(
        required=False, default=0, min_value=0, max_value=MAX_COUNT
    )
    seconds_spent = serializers.FloatField(
        required=False,
        default=0.0,
        min_value=0.0,
        max_value=MAX_SECONDS,
        help_text="active seconds the edit took, 0 to 86400",
    )


class MaskFilterInput(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=Mask.Status.choices, required=False)
    # "source" shadows Field.source for the type checker only; DRF collects declared fields.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=Mask.Source.choices, required=False
    )
    stage = serializers.ChoiceField(choices=Stage.choices, required=False)
    annotator = IdField(required=False, help_text="a user id")
    category = IdField(required=False, help_text="a category id")


class ProjectMaskFilterInput(MaskFilterInput):
    image = IdField(required=False, help_text="an image id")


def _filters(serializer_class: type[MaskFilterInput], params: Any) -> dict[str, Any]:
    data = serializer_class(data=params)
    data.is_valid(raise_exception=True)
    values = dict(data.validated_data)
    renamed = {"annotator": "annotator_id", "image": "image_id", "category": "category_id"}
    return {renamed.get(str(key), str(key)): value for key, value in values.items()}


class ProjectMaskListApi(generics.ListAPIView[Mask]):
    serializer_class = MaskOutput

    def get_queryset(self) -> QuerySet[Mask]:
        if getattr(self, "swagger_fake_view", False):
            return Mask.objects.none()
        project = project_get_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        filters = _filters(ProjectMaskFilterInput, self.request.query_params)
        return project_masks(project=project, **filters)

    @extend_schema(operation_id="masks_list", parameters=[ProjectMaskFilterInput])
    def get(self, *args: Any, **kwargs: Any) -> Any:
        return super().get(*args, **kwargs)


class ImageMaskListApi(generics.ListAPIView[Mask]):
    serializer_class = MaskOutput

    def get_queryset(self) -> QuerySet[Mask]:
        if getattr(self, "swagger_fake_view", False):
            return Mask.objects.none()
        image = image_get_for_user(user=self.request.user, image_id=self.kwargs["image_id"])
        filters = _filters(MaskFilterInput, self.request.query_params)
        # What the tool draws: accepted masks unless another status is asked for.
        filters.setdefault("status", Mask.Status.ACCEPTED)
        return project_masks(project=image.project, image_id=image.pk, **filters)

    @extend_schema(
        operation_id="image_masks_list",
        parameters=[MaskFilterInput],
        description="The image's masks in id order; accepted ones unless `status` says otherwise.",
    )
    def get(self, *args: Any, **kwargs: Any) -> Any:
        return super().get(*args, **kwargs)

    @extend_schema(
        operation_id="masks_accept",
        request=MaskAcceptInput,
        responses={
            201: MaskOutput,
            200: OpenApiResponse(MaskOutput, description="the idempotency key was stored already"),
        },
    )
    def post(self, request: Request, image_id: int) -> Response:
        image = image_get_for_user(user=request.user, image_id=image_id)
        require_role(user=request.user, project=image.project, role=ANNOTATOR)
        data = MaskAcceptInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        mask, created = mask_accept(
            image=image,
            annotator=acting_user(request.user),
            model_version_id=values.pop("model_version", None),
            category_id=values.pop("category", None),
            **values,
        )
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(MaskOutput(mask).data, status=code)


class MaskDetailApi(APIView):
    @extend_schema(
        operation_id="masks_edit",
        request=MaskEditInput,
        responses={200: MaskOutput},
        description="Replace an accepted mask's pixels and/or change its category: your own "
        "mask, or any mask of a project you review or administer. The edit's clicks, brush "
        "strokes and seconds add to the mask's; the mask needs review again.",
    )
    def patch(self, request: Request, mask_id: int) -> Response:
        mask = mask_get_for_user(user=request.user, mask_id=mask_id)
        data = MaskEditInput(data=request.data)
        data.is_valid(raise_exception=True)
        edited = mask_edit(mask=mask, user=acting_user(request.user), **data.validated_data)
        return Response(MaskOutput(edited).data)

    @extend_schema(operation_id="masks_delete", responses={204: None})
    def delete(self, request: Request, mask_id: int) -> Response:
        """Delete a mask: your own, or any mask of a project you review or administer."""
        mask = mask_get_for_user(user=request.user, mask_id=mask_id)
        mask_delete(mask=mask, user=acting_user(request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)
