"""Project members: list (any member), add or change a role, remove (project admins)."""

from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Membership
from annotation.permissions import require_admin
from annotation.selectors.projects import membership_get, project_get_for_user, project_members
from annotation.services.projects import membership_remove, membership_set


class MemberOutput(serializers.ModelSerializer[Membership]):
    user_id = serializers.IntegerField(source="user.pk", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["user_id", "username", "role", "created_at"]
        read_only_fields = fields


class MemberSetInput(serializers.Serializer[Any]):
    username = serializers.SlugRelatedField(
        slug_field="username",
        queryset=User.objects.filter(is_active=True),
        help_text="an existing, active user",
    )
    role = serializers.ChoiceField(choices=Membership.Role.choices)


class MemberListSetApi(generics.ListAPIView[Membership]):
    """GET: the members of a project and their roles. POST: add a member or change a role."""

    serializer_class = MemberOutput

    def get_queryset(self) -> QuerySet[Membership]:
        if getattr(self, "swagger_fake_view", False):
            return Membership.objects.none()
        project = project_get_for_user(user=self.request.user, project_id=self.kwargs["project_id"])
        return project_members(project=project)

    @extend_schema(operation_id="members_list")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="members_set", request=MemberSetInput, responses={200: MemberOutput}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        data = MemberSetInput(data=request.data)
        data.is_valid(raise_exception=True)
        membership = membership_set(
            project=project, user=data.validated_data["username"], role=data.validated_data["role"]
        )
        return Response(MemberOutput(membership).data, status=status.HTTP_200_OK)


class MemberRemoveApi(APIView):
    @extend_schema(
        operation_id="members_remove",
        request=None,
        responses={204: OpenApiResponse(description="the member was removed")},
    )
    def delete(self, request: Request, project_id: int, user_id: int) -> Response:
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        membership = membership_get(project=project, user_id=user_id)
        membership_remove(project=project, user=membership.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
