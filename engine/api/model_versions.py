"""Model versions over REST: any member lists and reads them; project admins import a checkpoint
(multipart upload, validated and ONNX-exported in the request: use ``manage.py
import_checkpoint`` for the multi-GB official files) and deploy a version; annotators download
its ONNX decoder for the browser."""

import hashlib
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse, HttpResponseBase, HttpResponseNotModified
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.errors import DomainError
from annotation.models import Project
from annotation.permissions import ANNOTATOR, acting_user, require_admin, require_role
from annotation.selectors.projects import (
    model_version_get_for_user,
    project_get_for_user,
    project_model_versions,
)
from engine.api.common import ErrorOutput, ToolApiView, etag_matches
from engine.models import ModelVersion
from engine.sam.config import CONFIGS
from engine.services.deployments import deployment_switch
from engine.services.registry import (
    ONNX_VARIANTS,
    model_version_import,
    onnx_variant_key,
    onnx_variant_key_ensure,
)
from storage.blobs import get_blob_store


class ModelVersionOutput(serializers.ModelSerializer[ModelVersion]):
    project = serializers.PrimaryKeyRelatedField[Project](read_only=True)
    # "parent" shadows Field.parent for the type checker only; DRF collects declared fields.
    parent = serializers.PrimaryKeyRelatedField[ModelVersion](  # type: ignore[assignment]
        read_only=True, allow_null=True
    )
    is_deployed = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "project",
            "name",
            "arch",
            "config",
            "sha256",
            "parent",
            "round",
            "metrics",
            "status",
            "is_deployed",
            "created_at",
        ]
        read_only_fields = fields

    def get_is_deployed(self, version: ModelVersion) -> bool:
        return version.project.deployed_version_id == version.pk


class ModelVersionImportInput(serializers.Serializer[Any]):
    file = serializers.FileField(help_text="a SAM checkpoint (.pth): official or maskloop's own")
    arch = serializers.ChoiceField(
        choices=sorted(CONFIGS), required=False, help_text="expected architecture (checked)"
    )
    name = serializers.CharField(required=False, default="", max_length=200, allow_blank=True)
    deploy = serializers.BooleanField(required=False, default=False)


class ProjectModelVersionListApi(generics.ListAPIView[ModelVersion]):
    """GET: the model versions of a project, newest first (any member). POST: import one."""

    serializer_class = ModelVersionOutput
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[ModelVersion]:
        if getattr(self, "swagger_fake_view", False):
            return ModelVersion.objects.none()
        project = project_get_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        return project_model_versions(project=project)

    @extend_schema(operation_id="model_versions_list")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="model_versions_import",
        request={"multipart/form-data": ModelVersionImportInput},
        responses={201: ModelVersionOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = acting_user(request.user)
        project = project_get_for_user(user=user, project_id=project_id)
        require_admin(user=user, project=project)
        data = ModelVersionImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        options = data.validated_data
        version = model_version_import(
            project=project,
            path_or_file=options["file"],
            arch=options.get("arch"),
            name=options["name"],
            deploy=options["deploy"],
            user=user,
        )
        version.project.refresh_from_db(fields=["deployed_version"])
        return Response(ModelVersionOutput(version).data, status=status.HTTP_201_CREATED)


class ModelVersionDetailApi(APIView):
    @extend_schema(operation_id="model_versions_retrieve", responses={200: ModelVersionOutput})
    def get(self, request: Request, version_id: int) -> Response:
        version = model_version_get_for_user(user=request.user, version_id=version_id)
        return Response(ModelVersionOutput(version).data)


class ModelVersionDeployApi(APIView):
    @extend_schema(
        operation_id="model_versions_deploy", request=None, responses={200: ModelVersionOutput}
    )
    def post(self, request: Request, version_id: int) -> Response:
        user = acting_user(request.user)
        version = model_version_get_for_user(user=user, version_id=version_id)
        require_admin(user=user, project=version.project)
        deployment_switch(
            version=version, user=user, reason="deployed through the API", refuse_same=False
        )
        return Response(ModelVersionOutput(version).data)


class OnnxNotAvailable(DomainError):
    """The version was registered without an ONNX decoder (decode on the server instead)."""

    status_code = 404
    code = "onnx_not_available"


class InvalidOnnxVariant(DomainError):
    code = "invalid_variant"


_onnx_digests: dict[str, str] = {}  # blob key -> sha256 of its bytes (blobs never change)


class ModelVersionOnnxApi(ToolApiView):
    @extend_schema(
        operation_id="model_versions_onnx",
        parameters=[
            OpenApiParameter(
                "variant",
                str,
                enum=list(ONNX_VARIANTS),
                default="official",
                description=(
                    "official: the official export's interface (masks upscaled to "
                    "orig_im_size in the graph); low_res: the same graph without orig_im_size "
                    "and masks (outputs iou_predictions, low_res_masks: upscale yourself)"
                ),
            )
        ],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="the ONNX decoder (engine/sam/onnx_export.py); ETag = its sha256",
            ),
            304: OpenApiResponse(description="unchanged since the ETag sent in If-None-Match"),
            400: OpenApiResponse(ErrorOutput, description="invalid_variant"),
            404: OpenApiResponse(ErrorOutput, description="no such version, or no ONNX decoder"),
        },
    )
    def get(self, request: Request, version_id: int) -> HttpResponseBase:
        """The version's prompt encoder + mask decoder as ONNX, for onnxruntime-web."""
        variant = request.query_params.get("variant", "official")
        if variant not in ONNX_VARIANTS:
            raise InvalidOnnxVariant(
                f"variant must be one of {list(ONNX_VARIANTS)}, not {variant[:40]!r}"
            )
        user = acting_user(request.user)
        version = model_version_get_for_user(user=user, version_id=version_id)
        require_role(user=user, project=version.project, role=ANNOTATOR)
        if not version.onnx_decoder_key:
            raise OnnxNotAvailable(f"model version {version.pk} has no ONNX decoder")
        key = onnx_variant_key(version.onnx_decoder_key, variant)
        known = _onnx_digests.get(key)
        if known is not None and etag_matches(request, f'"{known}"'):
            return _long_cached(HttpResponseNotModified(), known)
        # A version imported before the low-res variant existed gets it derived here, once.
        onnx_variant_key_ensure(version=version, variant=variant)
        data = get_blob_store().get_bytes(key)
        digest = _onnx_digests[key] = hashlib.sha256(data).hexdigest()
        return _long_cached(HttpResponse(data, content_type="application/octet-stream"), digest)


def _long_cached(response: HttpResponseBase, digest: str) -> HttpResponseBase:
    # The URL names a version, whose decoder blob is content-addressed and written once.
    response["ETag"] = f'"{digest}"'
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    return response
