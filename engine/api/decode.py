"""Prompt -> masks on the server (``POST /api/images/{id}/decode/``): the tool's fallback when
the browser cannot run the ONNX decoder, and the way scripts annotate."""

import time
from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.api.ids import IdField
from annotation.permissions import acting_user
from engine.api.common import (
    ErrorOutput,
    NonStrictJSONParser,
    ToolApiView,
    VersionGoneOutput,
)
from engine.services.decode import FORMATS, DecodedMask, masks_decode
from engine.services.mask_refs import mask_ref_writes_after_response
from engine.services.serving import decode_image_get, decoder_wake


class PromptJSONField(serializers.JSONField):
    """Passes the parsed JSON through untouched (NaN included: DRF's JSONField would refuse
    it): engine.services.decode checks prompts, so every problem with one is a single
    `invalid_prompt` answer naming the value."""

    def to_internal_value(self, data: Any) -> Any:
        return data


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
        "description": "[[x, y], ...] in original-image pixels, 0 <= x <= width, 0 <= y <= height",
    }
)
class PointsField(PromptJSONField):
    pass


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "integer", "enum": [0, 1]},
        "description": "one per point: 1 foreground, 0 background",
    }
)
class LabelsField(PromptJSONField):
    pass


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 4,
        "maxItems": 4,
        "nullable": True,
        "description": "[x0, y0, x1, y1] inside the image, x1 > x0, y1 > y0",
    }
)
class BoxField(PromptJSONField):
    pass


class DecodeInput(serializers.Serializer[Any]):
    model_version = IdField(
        required=False,
        allow_null=True,
        default=None,
        help_text="a version of the image's project (default: the deployed one)",
    )
    points = PointsField(required=False, allow_null=True, default=None)
    labels = LabelsField(required=False, allow_null=True, default=None)
    box = BoxField(required=False, allow_null=True, default=None)
    mask_ref = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        trim_whitespace=False,
        help_text="a `mask_ref` of an earlier answer: its logits are fed back as mask_input",
    )
    multimask = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="three candidates or one; default: three for exactly one point and no box",
    )
    format = serializers.ChoiceField(choices=list(FORMATS), required=False, default="rle")


class RleOutput(serializers.Serializer[Any]):
    size = serializers.ListField(child=serializers.IntegerField(), help_text="[H, W]")
    counts = serializers.CharField(help_text="compressed COCO RLE counts")


class DecodedMaskOutput(serializers.Serializer[Any]):
    rle = RleOutput(required=False, help_text='format "rle"')
    png = serializers.CharField(required=False, help_text='format "png": base64 1-bit PNG')
    score = serializers.FloatField(help_text="the decoder's predicted IoU")
    mask_ref = serializers.CharField(help_text="send back to refine this candidate")


class DecodeOutput(serializers.Serializer[Any]):
    model_version = serializers.IntegerField()
    multimask = serializers.BooleanField()
    masks = DecodedMaskOutput(many=True, help_text="decoder order: 3 candidates or 1")
    width = serializers.IntegerField()
    height = serializers.IntegerField()


def _mask_body(mask: DecodedMask) -> dict[str, Any]:
    return {key: value for key, value in asdict(mask).items() if value is not None}


class ImageDecodeApi(ToolApiView):
    parser_classes = [NonStrictJSONParser]

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.method == "POST":
            decoder_wake()  # before authentication: the threads wake while DRF works
        return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        operation_id="images_decode",
        request=DecodeInput,
        responses={
            200: DecodeOutput,
            400: OpenApiResponse(ErrorOutput, description="`invalid_prompt`, `invalid_mask_ref`"),
            404: OpenApiResponse(ErrorOutput, description="not an image of a project of yours"),
            409: OpenApiResponse(
                VersionGoneOutput,
                description="`embedding_not_ready` (queued with priority: retry), "
                "`model_version_gone` (with `deployed_version`), `no_deployed_version`",
            ),
        },
    )
    def post(self, request: Request, image_id: int) -> Response:
        """Masks for points / a box (and a previous mask) against the stored embedding."""
        started = time.perf_counter()
        mask_ref_writes_after_response()
        user = acting_user(request.user)
        image = decode_image_get(user=user, image_id=image_id)  # 404 / 403, one query
        data = DecodeInput(data=request.data)
        data.is_valid(raise_exception=True)
        options = data.validated_data
        result = masks_decode(
            user=user,
            image=image,
            model_version_id=options["model_version"],
            points=options["points"],
            labels=options["labels"],
            box=options["box"],
            mask_ref=options["mask_ref"],
            multimask=options["multimask"],
            output_format=options["format"],
        )
        response = Response(
            {
                "model_version": result.model_version.pk,
                "multimask": result.multimask,
                "masks": [_mask_body(mask) for mask in result.masks],
                "width": result.width,
                "height": result.height,
            }
        )
        # Where a click's time went, for the browser's network panel and the latency bench.
        response["Server-Timing"] = (
            f'decoder;dur={result.decoder_seconds * 1000:.1f};desc="model", '
            f'view;dur={(time.perf_counter() - started) * 1000:.1f};desc="after authentication"'
        )
        return response
