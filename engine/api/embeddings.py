"""Embeddings over REST: admins start a bulk precompute job; any member asks for the images
they are about to open to be embedded first; the tool asks whether one image's embedding is
ready (queueing it when not) and downloads it as raw float32 for the browser-side decoder."""

from typing import Any

from django.http import HttpResponse, HttpResponseBase, HttpResponseNotModified
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.ids import IdField
from annotation.models import Image, Project
from annotation.permissions import ANNOTATOR, acting_user, require_admin, require_role
from annotation.selectors.projects import image_get_for_user, project_get_for_user
from engine.api.common import (
    ErrorOutput,
    ModelVersionSummary,
    ToolApiView,
    VersionGoneOutput,
    etag_matches,
)
from engine.api.jobs import JobOutput
from engine.models import ModelVersion
from engine.selectors import model_version_for_project, project_images_by_ids
from engine.services.embeddings import (
    EmbeddingRefused,
    embeddings_precompute_start,
    embeddings_request,
)
from engine.services.serving import (
    EmbeddingDataNotReady,
    embedding_cached,
    embedding_float32_bytes,
    embedding_prepare,
    serving_version,
)


class EmbeddingPrecomputeInput(serializers.Serializer[Any]):
    model_version = IdField(
        required=False, help_text="a version of the project (default: the deployed one)"
    )


class EmbeddingPrecomputeApi(APIView):
    @extend_schema(
        operation_id="embeddings_precompute",
        request=EmbeddingPrecomputeInput,
        responses={202: JobOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = acting_user(request.user)
        project = project_get_for_user(user=user, project_id=project_id)
        require_admin(user=user, project=project)
        data = EmbeddingPrecomputeInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = _version_of(project, data.validated_data.get("model_version"))
        job = embeddings_precompute_start(project=project, model_version=version, user=user)
        return Response(
            JobOutput(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )


class EmbeddingRequestInput(serializers.Serializer[Any]):
    image_ids = serializers.ListField(
        child=IdField(), min_length=1, max_length=100,
        help_text="images about to be opened, most urgent first",
    )  # fmt: skip
    model_version = IdField(
        required=False, help_text="a version of the project (default: the deployed one)"
    )


class EmbeddingRequestOutput(serializers.Serializer[Any]):
    queued = serializers.ListField(
        child=serializers.IntegerField(), help_text="ids queued (the others are stored already)"
    )


class EmbeddingRequestApi(APIView):
    @extend_schema(
        operation_id="embeddings_request",
        request=EmbeddingRequestInput,
        responses={202: EmbeddingRequestOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = acting_user(request.user)
        project = project_get_for_user(user=user, project_id=project_id)
        data = EmbeddingRequestInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = _version_of(project, data.validated_data.get("model_version"))
        if version is None:
            raise EmbeddingRefused(f"project {project.name!r} has no deployed model version")
        ids: list[int] = data.validated_data["image_ids"]
        found = {image.pk: image for image in project_images_by_ids(project=project, image_ids=ids)}
        unknown = [image_id for image_id in ids if image_id not in found]
        if unknown:
            raise EmbeddingRefused(f"no images {unknown} in project {project.name!r}")
        queued = embeddings_request(
            images=[found[image_id] for image_id in dict.fromkeys(ids)], model_version=version
        )
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)


def _version_of(project: Project, version_id: int | None) -> ModelVersion | None:
    """The project's version ``version_id`` (EmbeddingRefused if not its), else the deployed."""
    if version_id is None:
        return project.deployed_version
    version = model_version_for_project(project=project, version_id=version_id)
    if version is None:
        raise EmbeddingRefused(f"no model version {version_id} in project {project.name!r}")
    return version


# --- one image's embedding, for the tool and its browser-side decoder -------------------------


class ImageEmbeddingQuery(serializers.Serializer[Any]):
    model_version = IdField(
        required=False,
        allow_null=True,
        default=None,
        help_text="a version of the image's project (default: the deployed one)",
    )


class ImageEmbeddingOutput(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=["ready", "queued"])
    model_version = ModelVersionSummary()
    embedding_url = serializers.CharField(
        required=False, help_text="ready only: the raw float32 bytes (`embeddings_data`)"
    )
    shape = serializers.ListField(
        child=serializers.IntegerField(), required=False, help_text="ready only: [1, C, 64, 64]"
    )
    input_size = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        help_text="ready only: [h, w], the image resized so its longest side is 1024",
    )
    original_size = serializers.ListField(
        child=serializers.IntegerField(), required=False, help_text="ready only: [H, W]"
    )


def _tool_target(request: Request, image_id: int) -> tuple[Image, ModelVersion]:
    """The image (404 for outsiders, annotators and up) and the version the query names."""
    user = acting_user(request.user)
    image = image_get_for_user(user=user, image_id=image_id)
    require_role(user=user, project=image.project, role=ANNOTATOR)
    query = ImageEmbeddingQuery(data=request.query_params)
    query.is_valid(raise_exception=True)
    version = serving_version(
        project=image.project, version_id=query.validated_data["model_version"]
    )
    return image, version


_VERSION_ERRORS = {
    409: OpenApiResponse(
        VersionGoneOutput,
        description="`model_version_gone` (with `deployed_version`) or `no_deployed_version`",
    ),
    404: OpenApiResponse(ErrorOutput, description="not an image of a project of yours"),
}


class ImageEmbeddingApi(ToolApiView):
    @extend_schema(
        operation_id="embeddings_status",
        parameters=[ImageEmbeddingQuery],
        responses={
            200: ImageEmbeddingOutput,
            202: OpenApiResponse(
                ImageEmbeddingOutput, description="not stored yet: queued with priority"
            ),
            **_VERSION_ERRORS,
        },
    )
    def get(self, request: Request, image_id: int) -> Response:
        """Whether the image's embedding is ready; when it is not, queue it (idempotent)."""
        image, version = _tool_target(request, image_id)
        summary = ModelVersionSummary(version).data
        shape = embedding_prepare(image=image, model_version=version)
        if shape is None:
            body = {"status": "queued", "model_version": summary}
            return Response(body, status=status.HTTP_202_ACCEPTED)
        url = reverse("api-image-embedding-data", args=[image.pk])
        return Response(
            {
                "status": "ready",
                "model_version": summary,
                "embedding_url": f"{url}?model_version={version.pk}",
                "shape": list(shape.shape),
                "input_size": list(shape.input_size),
                "original_size": list(shape.original_size),
            }
        )


class ImageEmbeddingDataApi(ToolApiView):
    @extend_schema(
        operation_id="embeddings_data",
        parameters=[ImageEmbeddingQuery],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="little-endian float32, C order; shape in `X-Embedding-Shape`",
            ),
            304: OpenApiResponse(description="unchanged since the ETag sent in If-None-Match"),
            **_VERSION_ERRORS,
        },
    )
    def get(self, request: Request, image_id: int) -> HttpResponseBase:
        """The stored embedding as raw float32 bytes (404 `embedding_not_ready` before)."""
        image, version = _tool_target(request, image_id)
        # A version's embedding of given image bytes never changes: the pair names it.
        etag = f'"embedding-{version.pk}-{image.sha256}"'
        if etag_matches(request, etag):
            return _cacheable(HttpResponseNotModified(), etag)
        embedding = embedding_cached(image=image, model_version=version)
        if embedding is None:
            raise EmbeddingDataNotReady(
                f"the embedding of image {image.pk} for model version {version.pk} is not "
                "computed yet; GET the embedding status to queue it"
            )
        response = HttpResponse(
            embedding_float32_bytes(embedding), content_type="application/octet-stream"
        )
        response["X-Embedding-Shape"] = ",".join(str(v) for v in embedding.embedding.shape)
        return _cacheable(response, etag)


def _cacheable(response: HttpResponseBase, etag: str) -> HttpResponseBase:
    response["ETag"] = etag
    response["Cache-Control"] = "private, max-age=86400"
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    return response
