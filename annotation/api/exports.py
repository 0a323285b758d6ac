"""Dataset exports: POST starts a COCO or SA-1B export job (project admins) → 202 with the job."""

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.ids import IdField
from annotation.models import Mask, Stage
from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import project_get_for_user
from annotation.services.export import export_start
from engine.api import JobOutput


class ExportInput(serializers.Serializer[Any]):
    format = serializers.ChoiceField(choices=[("coco", "COCO (RLE)"), ("sa1b", "SA-1B tar shards")])
    # A plain string in the schema: the review-status enum is documented once, on MaskOutput.
    status = serializers.CharField(
        default=Mask.Status.ACCEPTED,
        help_text="export the masks with this review status: " + ", ".join(Mask.Status.values),
    )
    stage = serializers.ChoiceField(choices=Stage.choices, required=False)
    # "source" shadows Field.source for the type checker only; DRF collects declared fields.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=Mask.Source.choices, required=False
    )
    shard_size = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=100_000,
        help_text=f"SA-1B: images per tar shard (default {settings.MASKLOOP_SA1B_SHARD_SIZE})",
    )
    job = IdField(
        required=False,
        help_text="only the masks of this automatic or prefill run of the project (its id)",
    )
    include_images = serializers.BooleanField(
        default=True, help_text="SA-1B: put the image files in the shards next to their JSON"
    )
    reviewed = serializers.BooleanField(
        default=False, help_text="only masks a reviewer approved or fixed (QA-passed data)"
    )
    categories = serializers.ListField(
        child=IdField(),
        required=False,
        allow_empty=False,
        max_length=1000,
        help_text="only the masks of these categories of the project (their ids)",
    )

    def validate_status(self, value: str) -> str:
        if value not in Mask.Status.values:
            raise serializers.ValidationError(
                f"unknown status {value!r}; use one of: {', '.join(Mask.Status.values)}"
            )
        return value


class ExportCreateApi(APIView):
    @extend_schema(operation_id="exports_create", request=ExportInput, responses={202: JobOutput})
    def post(self, request: Request, project_id: int) -> Response:
        project = project_get_for_user(user=acting_user(request.user), project_id=project_id)
        require_admin(user=acting_user(request.user), project=project)
        data = ExportInput(data=request.data)
        data.is_valid(raise_exception=True)
        options = dict(data.validated_data)
        job = export_start(
            project=project,
            fmt=options.pop("format"),
            job_id=options.pop("job", None),
            user=acting_user(request.user),
            **options,
        )
        return Response(
            JobOutput(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )
