"""Masks (read-only for now): per project or per image, filtered by status, source, stage."""

from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers

from annotation.models import Image, Mask, Stage
from annotation.selectors.projects import image_get_for_user, project_get_for_user, project_masks
from engine.models import ModelVersion


class RleOutput(serializers.Serializer[Any]):
    size = serializers.ListField(child=serializers.IntegerField(), help_text="[height, width]")
    counts = serializers.CharField(help_text="compressed COCO RLE counts")


class MaskOutput(serializers.ModelSerializer[Mask]):
    image = serializers.PrimaryKeyRelatedField[Image](read_only=True)
    model_version = serializers.PrimaryKeyRelatedField[ModelVersion](
        read_only=True, allow_null=True
    )
    annotator = serializers.PrimaryKeyRelatedField[User](read_only=True, allow_null=True)
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
            "predicted_iou",
            "stability_score",
            "point_coords",
            "crop_box",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class MaskFilterInput(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=Mask.Status.choices, required=False)
    # "source" shadows Field.source for the type checker only; DRF collects declared fields.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=Mask.Source.choices, required=False
    )
    stage = serializers.ChoiceField(choices=Stage.choices, required=False)
    annotator = serializers.IntegerField(required=False, min_value=1, help_text="a user id")


class ProjectMaskFilterInput(MaskFilterInput):
    image = serializers.IntegerField(required=False, min_value=1, help_text="an image id")


def _filters(serializer_class: type[MaskFilterInput], params: Any) -> dict[str, Any]:
    data = serializer_class(data=params)
    data.is_valid(raise_exception=True)
    values = dict(data.validated_data)
    renamed = {"annotator": "annotator_id", "image": "image_id"}
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
        return project_masks(project=image.project, image_id=image.pk, **filters)

    @extend_schema(operation_id="image_masks_list", parameters=[MaskFilterInput])
    def get(self, *args: Any, **kwargs: Any) -> Any:
        return super().get(*args, **kwargs)
