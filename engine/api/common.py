"""Pieces shared by the tool-facing engine views: the error body, JSON parsing, a version
summary, ETags."""

from collections.abc import Callable
from typing import Any

from django.urls import reverse
from rest_framework import serializers
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.exceptions import api_exception_handler
from engine.models import ModelVersion
from engine.services.serving import ModelVersionGone


class ModelVersionSummary(serializers.ModelSerializer[ModelVersion]):
    onnx_url = serializers.SerializerMethodField(
        help_text="the ONNX decoder for the browser; null when the version has none"
    )

    class Meta:
        model = ModelVersion
        fields = ["id", "name", "arch", "onnx_url"]
        read_only_fields = fields

    def get_onnx_url(self, version: ModelVersion) -> str | None:
        if not version.onnx_decoder_key:
            return None
        return reverse("api-model-version-onnx", args=[version.pk])


class ErrorOutput(serializers.Serializer[Any]):
    code = serializers.CharField()
    detail = serializers.CharField()


class VersionGoneOutput(ErrorOutput):
    deployed_version = ModelVersionSummary(allow_null=True)


def tool_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The project's handler, plus the deployed version (with its ONNX URL) on a 409
    ``model_version_gone`` so that the tool can reload it."""
    response = api_exception_handler(exc, context)
    if response is None or not isinstance(response.data, dict):
        return response
    response.data.setdefault("code", response.data.get("error", "error"))
    if isinstance(exc, ModelVersionGone):
        deployed = exc.deployed_version
        summary = None if deployed is None else ModelVersionSummary(deployed).data
        response.data["deployed_version"] = summary
    return response


class ToolApiView(APIView):
    """An APIView answering errors in the contract's shape."""

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Response | None]:
        return tool_exception_handler


def etag_matches(request: Request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak or strong: the bytes never change)."""
    header = request.headers.get("If-None-Match", "")
    return etag in {tag.strip().removeprefix("W/") for tag in header.split(",")}


class NonStrictJSONParser(JSONParser):
    """Parses ``NaN`` and ``Infinity`` (JavaScript's ``JSON.stringify`` never writes them, but
    hand-written clients do) so that the prompt validator answers ``invalid_prompt`` naming the
    value, instead of a generic parse error."""

    strict = False
