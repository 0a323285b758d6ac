"""The model registry and the job table.

Every long-running piece of work (ingest, embedding, export, training, automatic stage) is a
``Job`` row: status, progress and error live in the database, so a dead worker loses nothing
and the web UI and the API can show progress.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    """A SAM checkpoint registered for a project: imported, or produced by a retrain round."""

    class Status(models.TextChoices):
        READY = "ready", "Ready"
        RETIRED = "retired", "Retired"

    project = models.ForeignKey(
        "annotation.Project", on_delete=models.CASCADE, related_name="model_versions"
    )
    name = models.CharField(max_length=200, blank=True)
    arch = models.CharField(max_length=32, help_text="vit_b, vit_l, vit_h or a small test config")
    config = models.JSONField(default=dict, blank=True)
    checkpoint_key = models.CharField(max_length=1024)
    sha256 = models.CharField(max_length=64)
    onnx_decoder_key = models.CharField(max_length=1024, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    round = models.PositiveIntegerField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "sha256"], name="modelversion_unique_sha"),
            models.CheckConstraint(
                condition=Q(status__in=["ready", "retired"]), name="modelversion_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.arch} #{self.pk}"


class Job(models.Model):
    """A long-running job with status, progress, error and timings."""

    class Kind(models.TextChoices):
        INGEST = "ingest", "Image import"
        EXPORT = "export", "Dataset export"
        EMBED = "embed", "Embedding"
        TRAIN = "train", "Retrain round"
        AUTOMATIC = "automatic", "Automatic stage"
        PREFILL = "prefill", "Semi-automatic prefill"
        IMPORT_MASKS = "import_masks", "Annotation import"
        REMOVE_IMAGES = "remove_images", "Image removal"
        DELETE_PROJECT = "delete_project", "Project deletion"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    project = models.ForeignKey(
        "annotation.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    celery_task_id = models.CharField(max_length=255, blank=True)
    # "host:pid" of the process that started it last, or of the worker that took its message
    # from the folder broker while queued (engine.services.job_recovery).
    runner = models.CharField(max_length=255, blank=True)
    # Times it was queued again after its process died (engine.services.job_recovery).
    recoveries = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["project", "kind", "-created_at"], name="job_project_kind")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "succeeded", "failed", "cancelled"]),
                name="job_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    kind__in=[
                        "ingest",
                        "export",
                        "embed",
                        "train",
                        "automatic",
                        "prefill",
                        "import_masks",
                        "remove_images",
                        "delete_project",
                    ]
                ),
                name="job_kind_valid",
            ),
            models.CheckConstraint(condition=Q(progress_done__gte=0), name="job_progress_nonneg"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} job #{self.pk} ({self.status})"

    @property
    def progress(self) -> float | None:
        """Fraction done in [0, 1], or None when the total is not known yet."""
        if not self.progress_total:
            return 1.0 if self.status == self.Status.SUCCEEDED else None
        return min(1.0, self.progress_done / self.progress_total)

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class Deployment(models.Model):
    """One change of a project's deployed model version: a promotion (by an admin or by the
    auto-promotion policy) or a rollback. Append-only history: rollback reads what came before,
    the dashboard shows it along the lineage."""

    class Action(models.TextChoices):
        PROMOTE = "promote", "Promoted"
        ROLLBACK = "rollback", "Rolled back"
        AUTO = "auto", "Auto-promoted"

    project = models.ForeignKey(
        "annotation.Project", on_delete=models.CASCADE, related_name="deployments"
    )
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="deployments")
    previous_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["project", "-id"], name="deployment_project_id")]
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=["promote", "rollback", "auto"]),
                name="deployment_action_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} of version {self.version_id} in project {self.project_id}"


class AutomaticImage(models.Model):
    """One image of an automatic or prefill run: its state, the masks it got and its timings.

    The run's Job says what to do (settings, pinned model version); these rows say how far it
    got, so a cancelled or interrupted run resumes with exactly the images still pending, and a
    redelivered chunk skips the images already done.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="automatic_images")
    image = models.ForeignKey("annotation.Image", on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    masks = models.PositiveIntegerField(default=0, help_text="masks written for this image")
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    timings = models.JSONField(
        default=dict, blank=True, help_text='seconds: {"encoder", "decoder", "postprocess", "db"}'
    )
    attempts = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Chunks and progress: the pending (or done, failed) images of one run in id order.
            models.Index(fields=["job", "status", "image"], name="autoimage_job_status_image"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["job", "image"], name="autoimage_unique_job_image"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "done", "failed"]),
                name="autoimage_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"image {self.image_id} of run {self.job_id} ({self.status})"
