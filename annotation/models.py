"""Projects, memberships, images and masks.

Masks are the big table (millions of rows per project, hundreds of millions at SA-1B scale):
they carry a denormalised ``project`` so that the exporter and the stats read one index range
instead of joining through images.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Stage(models.TextChoices):
    ASSISTED_MANUAL = "assisted_manual", "Assisted-manual"
    SEMI_AUTOMATIC = "semi_automatic", "Semi-automatic"
    FULLY_AUTOMATIC = "fully_automatic", "Fully automatic"


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    stage = models.CharField(max_length=32, choices=Stage.choices, default=Stage.ASSISTED_MANUAL)
    deployed_version = models.ForeignKey(
        "engine.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deployed_in",
    )
    # Per-project overrides of the automatic generator's settings, validated by the services
    # that write them (engine.services.automatic for runs, the semi-automatic services for
    # prefill); empty means the defaults.
    automatic_settings = models.JSONField(default=dict, blank=True)
    prefill_settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(stage__in=[s.value for s in Stage]), name="project_stage_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        ANNOTATOR = "annotator", "Annotator"
        REVIEWER = "reviewer", "Reviewer"
        ADMIN = "admin", "Admin"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="membership_unique"),
            models.CheckConstraint(
                condition=Q(role__in=["annotator", "reviewer", "admin"]),
                name="membership_role_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role} in {self.project}"


class Image(models.Model):
    """An image stored once per project under ``images/<sha256>`` of its original bytes.

    ``width``/``height`` are after EXIF orientation, i.e. what the model and the tool see.
    ``status`` is ``todo`` until an annotator marks the image done, or ``skipped`` when someone
    set it aside as unusable (``skip_reason`` says why): a skipped image is not handed out, and
    its masks stay out of exports and training rounds until a reviewer reopens it.
    """

    class Status(models.TextChoices):
        TODO = "todo", "To do"
        DONE = "done", "Done"
        SKIPPED = "skipped", "Skipped"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    blob_key = models.CharField(max_length=1024)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    file_name = models.CharField(max_length=512, blank=True)
    format = models.CharField(max_length=16, help_text="JPEG, PNG, WEBP or TIFF")
    byte_size = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TODO)
    skip_reason = models.CharField(max_length=500, blank=True)
    skipped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    skipped_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # "Next image": the lowest-id todo image of one project, an index range scan.
            models.Index(fields=["project", "status", "id"], name="image_project_status_id"),
            # COCO imports find a file's images by name (annotation.services.coco_import).
            models.Index(fields=["project", "file_name"], name="image_project_file_name"),
            # Removals delete an image file only when no project still has its bytes.
            models.Index(fields=["sha256"], name="image_sha256"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["project", "sha256"], name="image_unique_per_project"),
            models.CheckConstraint(condition=Q(width__gt=0, height__gt=0), name="image_size_pos"),
            models.CheckConstraint(
                condition=Q(status__in=["todo", "done", "skipped"]), name="image_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.file_name or self.sha256[:12]


class ImageLease(models.Model):
    """An annotator's hold on an image, so that "next image" hands it to nobody else.

    One row per (image, user). The lease is *held* while ``expires_at`` is in the future; at
    most one user holds an image at a time. That is kept by the lease services, which lock the
    image row (``SELECT ... FOR UPDATE``) before they write any lease of that image. Expired
    rows stay until the image is released or done: they tell a late accept that its lease ran
    out while someone else took the image over.
    """

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="leases")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="image_leases"
    )
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Resume: the caller's unexpired leases.
            models.Index(fields=["user", "expires_at"], name="lease_user_expires"),
        ]
        constraints = [
            # Also serves "who holds this image": every lookup by image is a prefix of it.
            models.UniqueConstraint(fields=["image", "user"], name="lease_unique_image_user"),
        ]

    def __str__(self) -> str:
        return f"lease of image {self.image_id} by user {self.user_id} until {self.expires_at}"


class Category(models.Model):
    """An optional class label of a project's masks ("car", "person"), as in COCO.

    SAM's masks are class-agnostic, so a mask needs none; teams that want classes define them
    per project. ``coco_id`` is the category's id in COCO exports and imports (kept from an
    imported file, so a round trip keeps the ids); ``color`` is how the tool draws its masks.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="categories")
    name = models.CharField(max_length=100)
    color = models.CharField(max_length=7, help_text="#rrggbb")
    coco_id = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["coco_id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="category_unique_name"),
            models.UniqueConstraint(fields=["project", "coco_id"], name="category_unique_coco_id"),
            models.CheckConstraint(condition=Q(coco_id__gt=0), name="category_coco_id_pos"),
        ]

    def __str__(self) -> str:
        return self.name


class Mask(models.Model):
    """One object mask as COCO RLE (``counts`` compressed, as str; size = image height, width)."""

    class Source(models.TextChoices):
        MANUAL = "manual", "Manual"
        ASSISTED = "assisted", "Model-assisted"
        PREFILL = "prefill", "Prefilled"
        AUTOMATIC = "automatic", "Automatic"
        IMPORTED = "imported", "Imported"  # from a COCO file (manage.py import_coco)

    class Status(models.TextChoices):
        PROPOSED = "proposed", "Proposed"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    # project, image and annotator have no single-column index of their own: the composite
    # indexes below start with them and serve every lookup by them (cascades included). A
    # single-column one is redundant, costs a write per mask, and at scale the planner picked
    # it over the composite ones and then sorted (tests/annotation/test_query_plans.py).
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="masks", db_index=False
    )
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="masks", db_index=False)
    rle_counts = models.TextField()
    bbox = models.JSONField(help_text="[x, y, w, h] in pixels")
    area = models.BigIntegerField()
    stage = models.CharField(max_length=32, choices=Stage.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACCEPTED)
    model_version = models.ForeignKey(
        "engine.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    prompts = models.JSONField(default=list, blank=True)
    seconds_spent = models.FloatField(null=True, blank=True)
    clicks = models.PositiveIntegerField(null=True, blank=True)
    brush_strokes = models.PositiveIntegerField(null=True, blank=True)
    predicted_iou = models.FloatField(null=True, blank=True)
    stability_score = models.FloatField(null=True, blank=True)
    point_coords = models.JSONField(null=True, blank=True, help_text="[[x, y]]")
    crop_box = models.JSONField(null=True, blank=True, help_text="[x, y, w, h]")
    idempotency_key = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # the partial index mask_reviewed_by
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.CharField(max_length=500, blank=True)
    # Edits of an accepted mask in the tool (annotation.services.mask_edit): how many, the
    # latest by whom and when. The annotator and provenance above stay those of the accept.
    edit_count = models.PositiveIntegerField(default=0, db_default=0)  # raw inserts too
    edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # never looked up by editor; an index would cost a write per edit
    )
    edited_at = models.DateTimeField(null=True, blank=True)
    # Optional class label; null: class-agnostic, as SAM's masks are. A deleted category
    # leaves its masks without one.
    category = models.ForeignKey(
        Category,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # the partial index mask_category
    )
    # The automatic or prefill run that made the mask (null for annotators' masks): rerunning
    # an image replaces exactly that run's masks of it.
    # No single-column index: mask_job_image (job, image) serves lookups by job as well, and
    # on this table every index costs a write per mask.
    job = models.ForeignKey(
        "engine.Job",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Exporter and training snapshots: one project, one status, in id order.
            models.Index(fields=["project", "status", "id"], name="mask_project_status_id"),
            # SA-1B export: masks grouped per image, images in id order.
            models.Index(
                fields=["project", "status", "image", "id"], name="mask_project_status_image"
            ),
            # The tool: masks of one image.
            models.Index(fields=["image", "status"], name="mask_image_status"),
            # Per-annotator stats over time. Partial, like the two below: automatic masks (the
            # bulk of the table at scale) have no annotator or reviewer, so they neither pay
            # these index writes nor fill the ranges the stats read.
            models.Index(
                fields=["annotator", "created_at"],
                condition=Q(annotator__isnull=False),
                name="mask_annotator_time",
            ),
            # Project stats over time (per day, last N days): people's and prefilled masks.
            models.Index(
                fields=["project", "created_at"],
                condition=Q(annotator__isnull=False) | Q(source="prefill"),
                name="mask_project_time",
            ),
            # A reviewer deleted (SET NULL) finds the masks they reviewed.
            models.Index(
                fields=["reviewed_by"],
                condition=Q(reviewed_by__isnull=False),
                name="mask_reviewed_by",
            ),
            # The review queue: accepted masks nobody reviewed yet, per image. Partial, so it
            # shrinks as reviewers work instead of growing with the table.
            models.Index(
                fields=["project", "image"],
                condition=Q(status="accepted", reviewed_at__isnull=True),
                name="mask_review_pending",
            ),
            # Masks of one category (counts, exports of some categories, a category deleted).
            # Partial: class-agnostic masks, the bulk of the table at scale, pay no write.
            models.Index(
                fields=["category", "id"],
                condition=Q(category__isnull=False),
                name="mask_category",
            ),
            # Automatic runs: replace one run's masks of one image, count a run's masks.
            models.Index(fields=["job", "image"], name="mask_job_image"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="mask_unique_idempotency_key",
            ),
            models.CheckConstraint(condition=Q(area__gte=0), name="mask_area_nonneg"),
            models.CheckConstraint(
                condition=Q(stage__in=[s.value for s in Stage]), name="mask_stage_valid"
            ),
            models.CheckConstraint(
                condition=Q(source__in=["manual", "assisted", "prefill", "automatic", "imported"]),
                name="mask_source_valid",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["proposed", "accepted", "rejected"]),
                name="mask_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(seconds_spent__isnull=True) | Q(seconds_spent__gte=0),
                name="mask_seconds_nonneg",
            ),
            models.CheckConstraint(
                condition=Q(stability_score__isnull=True)
                | Q(stability_score__gte=0, stability_score__lte=1),
                name="mask_stability_in_unit",
            ),
        ]

    def __str__(self) -> str:
        return f"mask #{self.pk} on image {self.image_id}"

    @property
    def rle(self) -> dict[str, object]:
        """COCO compressed RLE: ``{"size": [h, w], "counts": str}``."""
        return {"size": [self.image.height, self.image.width], "counts": self.rle_counts}
