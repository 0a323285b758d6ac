"""Images: list, multi-file upload (project admins), retrieve, original bytes, the pixels to
display, thumbnail."""

from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import caches
from django.db.models import QuerySet
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotModified,
    HttpResponseRedirect,
)
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.image_removal import REMOVAL_RESPONSES, image_delete_response
from annotation.imaging import (
    ACCEPTED_FORMATS,
    browser_draws_as_decoded,
    display_png,
    download_name,
    thumbnail_jpeg,
)
from annotation.models import Image, Project
from annotation.permissions import require_admin
from annotation.selectors.images import images_for_project
from annotation.selectors.projects import image_get_for_user, project_get_for_user
from annotation.services.ingest import images_ingest_batch
from storage.blobs import get_blob_store

THUMBNAIL_SIDE = 256
_Response = TypeVar("_Response", bound=HttpResponseBase)
_CACHE_CONTROL = "private, max-age=86400"


class ImageOutput(serializers.ModelSerializer[Image]):
    project = serializers.PrimaryKeyRelatedField[Project](read_only=True)
    content_url = serializers.SerializerMethodField(help_text="the original bytes")
    display_url = serializers.SerializerMethodField(
        help_text="what a browser should draw: the model's pixels (see the endpoint)"
    )
    thumbnail_url = serializers.SerializerMethodField()
    skip_reason = serializers.CharField(help_text="why the image was skipped (status skipped)")
    skipped_by = serializers.IntegerField(
        source="skipped_by_id", allow_null=True, help_text="the user id who skipped it"
    )

    class Meta:
        model = Image
        fields = [
            "id",
            "project",
            "file_name",
            "width",
            "height",
            "format",
            "byte_size",
            "sha256",
            "status",
            "skip_reason",
            "skipped_by",
            "skipped_at",
            "created_at",
            "content_url",
            "display_url",
            "thumbnail_url",
        ]
        read_only_fields = fields

    def get_content_url(self, image: Image) -> str:
        return reverse("api-image-content", args=[image.pk])

    def get_display_url(self, image: Image) -> str:
        return reverse("api-image-display", args=[image.pk])

    def get_thumbnail_url(self, image: Image) -> str:
        return reverse("api-image-thumbnail", args=[image.pk])


class ImageUploadInput(serializers.Serializer[Any]):
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        allow_empty=False,
        help_text="one or more image files (JPEG, PNG, WebP, TIFF); all are imported or none",
    )


class UploadedImageOutput(serializers.Serializer[Any]):
    file_name = serializers.CharField()
    status = serializers.ChoiceField(choices=["imported", "duplicate"])
    image = ImageOutput()


class ImageUploadOutput(serializers.Serializer[Any]):
    imported = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    results = UploadedImageOutput(many=True)


class ImageListUploadApi(generics.ListAPIView[Image]):
    """GET: a project's images in id order (paginated). POST: upload images (all or nothing)."""

    serializer_class = ImageOutput
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[Image]:
        if getattr(self, "swagger_fake_view", False):
            return Image.objects.none()
        project = project_get_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        images = images_for_project(project=project)
        wanted = self.request.query_params.get("status")
        if wanted is None:
            return images
        if wanted not in Image.Status.values:
            raise ValidationError(
                {"status": [f"unknown status {wanted!r}; use one of {Image.Status.values}"]}
            )
        return images.filter(status=wanted)

    @extend_schema(
        operation_id="images_list",
        parameters=[
            OpenApiParameter(
                "status", str, enum=Image.Status.values, description="only images in this status"
            )
        ],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="images_upload",
        request={"multipart/form-data": ImageUploadInput},
        responses={
            201: ImageUploadOutput,
            200: OpenApiResponse(ImageUploadOutput, description="every file was a duplicate"),
        },
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        data = ImageUploadInput(data=request.data)
        data.is_valid(raise_exception=True)
        files = [(upload.name or "", upload.read()) for upload in data.validated_data["files"]]
        outcomes = images_ingest_batch(project=project, files=files)
        imported = sum(1 for outcome in outcomes if outcome.status == "imported")
        body = {
            "imported": imported,
            "duplicates": len(outcomes) - imported,
            "results": [
                {"file_name": o.file_name, "status": o.status, "image": o.image} for o in outcomes
            ],
        }
        code = status.HTTP_201_CREATED if imported else status.HTTP_200_OK
        return Response(ImageUploadOutput(body).data, status=code)


class ImageDetailApi(APIView):
    @extend_schema(operation_id="images_retrieve", responses={200: ImageOutput})
    def get(self, request: Request, image_id: int) -> Response:
        image = image_get_for_user(user=request.user, image_id=image_id)
        return Response(ImageOutput(image).data)

    @extend_schema(operation_id="images_destroy", request=None, responses=REMOVAL_RESPONSES)
    def delete(self, request: Request, image_id: int) -> Response:
        """Remove the image with its masks and files (project admins; cannot be undone)."""
        image = image_get_for_user(user=request.user, image_id=image_id)
        return image_delete_response(request=request, image=image)


def _not_modified(request: HttpRequest, etag: str) -> bool:
    sent = request.headers.get("If-None-Match", "")
    return etag in {tag.strip() for tag in sent.split(",")}


def _browser_cached(response: _Response, etag: str) -> _Response:
    """An image answer the browser keeps (the bytes behind ``etag`` never change)."""
    response["ETag"] = etag
    response["Cache-Control"] = _CACHE_CONTROL
    return response


def _original_response(request: HttpRequest, image: Image) -> HttpResponseBase:
    """The uploaded bytes: a redirect to a presigned URL, or streamed from the blob store."""
    store = get_blob_store()
    name = download_name(image.file_name or image.sha256, image.format)
    presigned = store.url(image.blob_key, expires=settings.S3_PRESIGN_SECONDS, filename=name)
    if presigned:
        return HttpResponseRedirect(presigned)
    etag = f'"{image.sha256}"'
    if _not_modified(request, etag):
        return HttpResponseNotModified(headers={"ETag": etag})
    response = FileResponse(
        store.open(image.blob_key),
        content_type=ACCEPTED_FORMATS.get(image.format, "application/octet-stream"),
        filename=name,
    )
    return _browser_cached(response, etag)


class ImageContentApi(APIView):
    @extend_schema(
        operation_id="images_content",
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="the original bytes, as uploaded"
            ),
            302: OpenApiResponse(description="redirect to a presigned URL of the blob store"),
        },
    )
    def get(self, request: Request, image_id: int) -> HttpResponseBase:
        image = image_get_for_user(user=request.user, image_id=image_id)
        return _original_response(request, image)


_DRAWN_AS_IS_PREFIX = "image-drawn-as-is:"  # + sha256: the bytes never change, nor the answer


def _display_bytes(image: Image) -> bytes | None:
    """None when the original bytes are what a browser should draw; else the PNG to draw.
    The decision is cached by sha256 (the bytes never change), so only the first request of
    an image drawn as is reads it here."""
    cache = caches["default"]
    key = f"{_DRAWN_AS_IS_PREFIX}{image.sha256}"
    as_is = cache.get(key)
    if as_is is True:
        return None
    data = get_blob_store().get_bytes(image.blob_key)
    if as_is is None:
        as_is = browser_draws_as_decoded(data)
        cache.set(key, as_is, timeout=None)
    return None if as_is else display_png(data)


def _derived_response(data: bytes, *, content_type: str, etag: str) -> HttpResponse:
    """Bytes made from the image (a thumbnail, a display PNG)."""
    return _browser_cached(HttpResponse(data, content_type=content_type), etag)


class ImageDisplayApi(APIView):
    @extend_schema(
        operation_id="images_display",
        responses={
            (200, "image/png"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="the original bytes when a browser draws them as the model sees "
                "them (JPEG; PNG and WebP in 8-bit grey, RGB or palette without transparency "
                "or EXIF rotation); otherwise a PNG of the model's pixels (TIFF, 16-bit grey, "
                "CMYK, transparency composited on white, EXIF rotation applied)",
            ),
            302: OpenApiResponse(description="redirect to a presigned URL of the original"),
        },
    )
    def get(self, request: Request, image_id: int) -> HttpResponseBase:
        image = image_get_for_user(user=request.user, image_id=image_id)
        etag = f'"{image.sha256}-display"'
        if _not_modified(request, etag):  # only the rendered PNG carries this tag
            return HttpResponseNotModified(headers={"ETag": etag})
        data = _display_bytes(image)
        if data is None:
            return _original_response(request, image)
        return _derived_response(data, content_type="image/png", etag=etag)


class ImageThumbnailApi(APIView):
    @extend_schema(
        operation_id="images_thumbnail",
        responses={
            (200, "image/jpeg"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description=f"a JPEG whose longer side is at most {THUMBNAIL_SIDE} pixels",
            )
        },
    )
    def get(self, request: Request, image_id: int) -> HttpResponseBase:
        image = image_get_for_user(user=request.user, image_id=image_id)
        etag = f'"{image.sha256}-t{THUMBNAIL_SIDE}"'
        if _not_modified(request, etag):
            return HttpResponseNotModified(headers={"ETag": etag})
        data = thumbnail_jpeg(get_blob_store().get_bytes(image.blob_key), max_side=THUMBNAIL_SIDE)
        return _derived_response(data, content_type="image/jpeg", etag=etag)
