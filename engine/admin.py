"""Django admin for model versions and jobs."""

from django.contrib import admin

from engine.models import Job, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "arch", "project", "round", "status", "created_at"]
    list_filter = ["status", "arch", "project"]
    search_fields = ["name", "=sha256", "project__name"]
    list_select_related = ["project"]
    raw_id_fields = ["project", "parent"]
    readonly_fields = ["sha256", "checkpoint_key", "created_at"]


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
