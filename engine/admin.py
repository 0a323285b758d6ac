"""Django admin for model versions and jobs.

Checkpoints are imported with ``manage.py import_checkpoint`` or the API (they are validated
and ONNX-exported on the way in); here admins deploy a version and start its embeddings.
"""

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest

from annotation.errors import DomainError
from engine.models import AutomaticImage, Deployment, Job, ModelVersion
from engine.services.deployments import deployment_switch
from engine.services.embeddings import embeddings_precompute_start


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "arch", "project", "round", "status", "is_deployed", "created_at"]
    list_filter = ["status", "arch", "project"]
    search_fields = ["name", "=sha256", "project__name"]
    list_select_related = ["project"]
    raw_id_fields = ["project", "parent"]
    readonly_fields = ["sha256", "checkpoint_key", "onnx_decoder_key", "created_at"]
    actions = ["deploy", "precompute_embeddings"]

    @admin.display(boolean=True, description="deployed")
    def is_deployed(self, version: ModelVersion) -> bool:
        return version.project.deployed_version_id == version.pk

    @admin.action(description="Deploy in its project (one version)")
    def deploy(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "select exactly one version to deploy", messages.ERROR)
            return
        version = queryset.select_related("project").get()
        try:
            deployment_switch(
                version=version,
                user=request.user if isinstance(request.user, User) else None,
                reason="deployed from the Django admin",
                refuse_same=False,
            )
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"{version} is deployed in {version.project}")

    @admin.action(description="Precompute embeddings of every image of its project")
    def precompute_embeddings(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        user = request.user if request.user.is_authenticated else None
        for version in queryset.select_related("project"):
            try:
                job = embeddings_precompute_start(
                    project=version.project, model_version=version, user=user
                )
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                continue
            self.message_user(request, f"embedding job {job.pk} queued for {version}")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "status",
        "project",
        "progress_display",
        "created_by",
        "created_at",
    ]
    list_filter = ["kind", "status", "project"]
    search_fields = ["=id", "message", "celery_task_id"]
    list_select_related = ["project", "created_by"]
    raw_id_fields = ["project", "created_by"]
    readonly_fields = [
        "celery_task_id",
        "attempts",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
    ]

    @admin.display(description="progress")
    def progress_display(self, job: Job) -> str:
        fraction = job.progress
        return "—" if fraction is None else f"{fraction:.0%}"


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    """The promotion / rollback history (written by training.services.promotion only)."""

    list_display = ["id", "project", "version", "previous_version", "action", "user", "created_at"]
    list_filter = ["action", "project"]
    list_select_related = ["project", "version", "previous_version", "user"]
    readonly_fields = [field.name for field in Deployment._meta.fields]


@admin.register(AutomaticImage)
class AutomaticImageAdmin(admin.ModelAdmin):
    """The images of automatic and prefill runs (written by the runs only: read-only here)."""

    list_display = ["id", "job", "image", "status", "masks", "attempts", "updated_at"]
    list_filter = ["status", "job__kind"]
    search_fields = ["=job__id", "=image__id", "error"]
    list_select_related = ["job", "image"]
    readonly_fields = [field.name for field in AutomaticImage._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
