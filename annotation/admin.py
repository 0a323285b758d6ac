"""Django admin for projects, memberships, images and masks (with export actions on projects)."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from annotation.errors import DomainError
from annotation.models import Category, Image, ImageLease, Mask, Membership, Project
from annotation.permissions import acting_user
from annotation.services.export import export_start


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


def _export(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Project],
    fmt: str,
) -> None:
    for project in queryset:
        try:
            job = export_start(project=project, fmt=fmt, user=acting_user(request.user))
        except DomainError as exc:
            modeladmin.message_user(
                request, f"{project.name}: export refused: {exc.message}", messages.ERROR
            )
        else:
            modeladmin.message_user(
                request, f"{project.name}: {fmt} export started as job #{job.pk}", messages.SUCCESS
            )


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "stage", "deployed_version", "created_at"]
    list_filter = ["stage"]
    search_fields = ["name", "description"]
    raw_id_fields = ["deployed_version"]
    inlines = [MembershipInline]
    actions = ["export_coco", "export_sa1b"]

    def has_delete_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        # A project's files, protected round rows and cron schedule go through the deletion
        # service: the project page, DELETE /api/projects/{id}/ or manage.py delete_project.
        return False

    @admin.action(description="Export as COCO")
    def export_coco(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        _export(self, request, queryset, "coco")

    @admin.action(description="Export as SA-1B")
    def export_sa1b(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        _export(self, request, queryset, "sa1b")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__name"]
    autocomplete_fields = ["user", "project"]
    list_select_related = ["user", "project"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "file_name",
        "project",
        "status",
        "width",
        "height",
        "format",
        "byte_size",
    ]
    list_filter = ["status", "format", "project"]
    search_fields = ["file_name", "=sha256"]
    list_select_related = ["project"]
    readonly_fields = ["blob_key", "sha256", "width", "height", "format", "byte_size", "created_at"]
    show_full_result_count = False

    def has_delete_permission(self, request: HttpRequest, obj: Image | None = None) -> bool:
        # Removing images deletes their files too: the project page, the API or remove_images.
        return False


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    """Read-only here: the project page and the API check names, colours and ids."""

    list_display = ["name", "project", "coco_id", "color", "created_at"]
    list_filter = ["project"]
    search_fields = ["name", "project__name"]
    list_select_related = ["project"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Category | None = None) -> bool:
        return False


@admin.register(Mask)
class MaskAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "image",
        "project",
        "source",
        "status",
        "stage",
        "area",
        "annotator",
        "reviewed_at",
    ]
    list_filter = ["status", "source", "stage", "project"]
    search_fields = ["=id", "=image__id", "image__file_name", "rejection_reason"]
    list_select_related = ["image", "project", "annotator"]
    raw_id_fields = ["image", "project", "annotator", "model_version", "reviewed_by", "category"]
    readonly_fields = ["created_at", "updated_at", "reviewed_at"]
    # Millions of rows: no COUNT(*) over the whole table on every page.
    show_full_result_count = False


@admin.register(ImageLease)
class ImageLeaseAdmin(admin.ModelAdmin):
    """Who holds which image in the tool; delete a row to free an image at once."""

    list_display = ["image", "user", "expires_at", "created_at"]
    list_select_related = ["image", "user"]
    raw_id_fields = ["image", "user"]
    search_fields = ["user__username", "=image__id"]
