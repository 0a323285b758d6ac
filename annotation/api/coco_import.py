"""COCO annotation import: POST a COCO file (project admins) → 201 with the import's summary.

Imported while the request waits (~3,000 masks/s): files up to MASKLOOP_MAX_COCO_UPLOAD_BYTES;
larger ones are refused with 413 and a pointer to ``manage.py import_coco``.
"""

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import project_get_for_user
from annotation.services.coco_import import coco_import_upload
from annotation.services.coco_import_undo import coco_import_undo
from engine.api.common import ErrorOutput


class CocoImportInput(serializers.Serializer[Any]):
    file = serializers.FileField(help_text="a COCO annotation file (JSON)")
    skip_missing_images = serializers.BooleanField(
        default=False,
        help_text="leave out the file's images that are not in the project (default: refuse)",
    )
    keep_categories = serializers.BooleanField(
        default=True,
        help_text="give the masks the file's categories, creating the project's missing ones "
        "(false: import them without a category)",
    )


class CocoImportOutput(serializers.Serializer[Any]):
    job = serializers.IntegerField(help_text="the import's job (kind import_masks)")
    images = serializers.IntegerField(help_text="images of the project given masks by the file")
    masks = serializers.IntegerField(help_text="masks imported now")
    already = serializers.IntegerField(
        help_text="masks left out as in the project already (imported before, same pixels)"
    )
    skipped_images = serializers.ListField(
        child=serializers.CharField(), help_text="the first 20 names not in the project"
    )
    skipped_images_total = serializers.IntegerField()
    categories = serializers.IntegerField(help_text="categories in the file")
    categories_created = serializers.IntegerField(
        help_text="categories the project did not have, created from the file's"
    )


class CocoImportApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="annotations_import_coco",
        request={"multipart/form-data": CocoImportInput},
        responses={
            201: CocoImportOutput,
            400: OpenApiResponse(
                ErrorOutput, description="`coco_refused`: the problems, nothing imported"
            ),
            413: OpenApiResponse(ErrorOutput, description="`too_large`: use the command"),
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        """Import the masks of a COCO file onto the project's images (all or nothing)."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        data = CocoImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        summary = coco_import_upload(
            project=project,
            upload=data.validated_data["file"],
            user=acting_user(request.user),
            skip_missing_images=data.validated_data["skip_missing_images"],
            keep_categories=data.validated_data["keep_categories"],
        )
        body = {"job": summary.job_id, **summary.as_dict()}
        return Response(CocoImportOutput(body).data, status=status.HTTP_201_CREATED)


class CocoImportUndoneOutput(serializers.Serializer[Any]):
    job = serializers.IntegerField()
    deleted = serializers.IntegerField(help_text="masks deleted now (0 when undone before)")


class CocoImportUndoApi(APIView):
    @extend_schema(
        operation_id="annotations_import_undo",
        responses={
            200: CocoImportUndoneOutput,
            400: OpenApiResponse(ErrorOutput, description="`undo_refused`: not an import"),
            404: OpenApiResponse(ErrorOutput, description="no such job in this project"),
            409: OpenApiResponse(ErrorOutput, description="the import is still running"),
        },
    )
    def delete(self, request: Request, project_id: int, job_id: int) -> Response:
        """Take an import back: delete every mask it created (reviewed or not)."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        undone = coco_import_undo(project=project, job_id=job_id, user=acting_user(request.user))
        body = {"job": undone.job_id, "deleted": undone.deleted}
        return Response(CocoImportUndoneOutput(body).data)
