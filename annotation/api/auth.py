"""Token authentication: exchange a username and password for the user's API token."""

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.services.login_limits import login_allowed_check


class TokenOutput(serializers.Serializer[Any]):
    token = serializers.CharField(help_text='send as "Authorization: Token <token>"')


class TokenObtainApi(ObtainAuthToken):
    """DRF's token view (its serializer checks the credentials), documented in the schema."""

    @extend_schema(
        operation_id="auth_token_create",
        responses={
            200: TokenOutput,
            429: OpenApiResponse(
                description="`too_many_failed_logins`: too many failed attempts for this "
                "username from this address; wait for the window to end"
            ),
        },
        auth=[],
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        username = request.data.get("username") if hasattr(request.data, "get") else None
        if isinstance(username, str):
            login_allowed_check(username=username, request=request)
        return super().post(request, *args, **kwargs)
