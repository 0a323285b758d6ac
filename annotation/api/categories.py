"""Project categories (optional class labels of masks): list (any member), create, rename or
recolour, delete (project admins)."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Category
from annotation.permissions import require_admin
from annotation.selectors.categories import category_get, category_mask_counts, project_categories
from annotation.selectors.projects import project_get_for_user
from annotation.services.categories import (
    MAX_COCO_ID,
    MAX_NAME,
    category_create,
    category_delete,
    category_update,
)


class CategoryOutput(serializers.ModelSerializer[Category]):
    masks = serializers.SerializerMethodField(help_text="accepted masks that carry it")

    class Meta:
        model = Category
        fields = ["id", "name", "color", "coco_id", "masks", "created_at"]
        read_only_fields = fields

    def get_masks(self, category: Category) -> int:
        return int(self.context.get("counts", {}).get(category.pk, 0))


class CategoryCreateInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=MAX_NAME, trim_whitespace=False)
    color = serializers.CharField(
        required=False, allow_null=True, help_text="#rrggbb; default: the next palette colour"
    )
    coco_id = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_COCO_ID,
        help_text="its id in COCO exports; default: one above the project's highest",
    )


class CategoryUpdateInput(serializers.Serializer[Any]):
    name = serializers.CharField(required=False, max_length=MAX_NAME, trim_whitespace=False)
    color = serializers.CharField(required=False, help_text="#rrggbb")


class CategoryListCreateApi(APIView):
    @extend_schema(operation_id="categories_list", responses={200: CategoryOutput(many=True)})
    def get(self, request: Request, project_id: int) -> Response:
        """The project's categories in COCO id order, with their accepted masks."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        counts = category_mask_counts(project=project)
        rows = project_categories(project=project)
        return Response(CategoryOutput(rows, many=True, context={"counts": counts}).data)

    @extend_schema(
        operation_id="categories_create",
        request=CategoryCreateInput,
        responses={201: CategoryOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        data = CategoryCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        category = category_create(project=project, **data.validated_data)
        return Response(CategoryOutput(category).data, status=status.HTTP_201_CREATED)


class CategoryDetailApi(APIView):
    @extend_schema(
        operation_id="categories_update",
        request=CategoryUpdateInput,
        responses={200: CategoryOutput},
    )
    def patch(self, request: Request, project_id: int, category_id: int) -> Response:
        """Rename or recolour a category; its masks follow."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        category = category_get(project=project, category_id=category_id)
        data = CategoryUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        updated = category_update(category=category, **data.validated_data)
        counts = category_mask_counts(project=project)
        return Response(CategoryOutput(updated, context={"counts": counts}).data)

    @extend_schema(
        operation_id="categories_delete",
        parameters=[
            OpenApiParameter(
                "force",
                bool,
                description="delete it even if masks carry it (they are left without one)",
            )
        ],
        responses={
            204: OpenApiResponse(description="deleted"),
            409: OpenApiResponse(description="masks carry it (category_in_use, with masks)"),
        },
    )
    def delete(self, request: Request, project_id: int, category_id: int) -> Response:
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        category = category_get(project=project, category_id=category_id)
        force = str(request.query_params.get("force", "")).lower() in ("1", "true", "yes")
        category_delete(category=category, force=force)
        return Response(status=status.HTTP_204_NO_CONTENT)
