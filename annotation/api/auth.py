"""Token authentication: exchange a username and password for the user's API token."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.request import Request
from rest_framework.response import Response


class TokenOutput(serializers.Serializer[Any]):
    token = serializers.CharField(help_text='send as "Authorization: Token <token>"')


class TokenObtainApi(ObtainAuthToken):
    """DRF's token view (its serializer checks the credentials), documented in the schema."""

    @extend_schema(operation_id="auth_token_create", responses={200: TokenOutput}, auth=[])
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)
