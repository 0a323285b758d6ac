"""Retrain rounds: the frozen validation split, the rounds themselves and per-project settings.

A round's status is its ``engine.Job``'s (queued → running → succeeded | failed | cancelled):
the job is what workers, the jobs page and the generic cancel endpoint already update, so the
round keeps no copy that could disagree with it.

Snapshots are stored compactly as sorted, inclusive id ranges ``[[first, last], ...]``
(``training.services.snapshot``): 100,000 masks accepted in id order are one range.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from engine.models import Job


class ValidationSplit(models.Model):
    """The images a project's rounds are evaluated on, chosen once at its first round.

    Later rounds reuse it unchanged, so their metrics are comparable; images added later are
    never in it (they train).
    """

    project = models.OneToOneField(
        "annotation.Project", on_delete=models.CASCADE, related_name="validation_split"
    )
    image_ids = models.JSONField(default=list, help_text="sorted ids of the validation images")
    seed = models.BigIntegerField()
    fraction = models.FloatField(default=0.2)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(fraction__gt=0, fraction__lt=1), name="valsplit_fraction_in_unit"
            ),
        ]

    def __str__(self) -> str:
        return f"validation split of project {self.project_id} ({len(self.image_ids)} images)"


class TrainingRound(models.Model):
    """One retrain round: what it trains on (snapshot), from which version, and its outcome."""

    project = models.ForeignKey(
        "annotation.Project", on_delete=models.CASCADE, related_name="training_rounds"
    )
    number = models.PositiveIntegerField(help_text="1, 2, 3 … per project")
    job = models.OneToOneField(Job, on_delete=models.PROTECT, related_name="training_round")
    parent_version = models.ForeignKey(
        "engine.ModelVersion", on_delete=models.PROTECT, related_name="rounds_trained_from"
    )
    produced_version = models.ForeignKey(
        "engine.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="produced_by_rounds",
    )
    train_mask_ranges = models.JSONField(
        default=list, help_text="accepted training mask ids as inclusive [first, last] ranges"
    )
    validation_mask_ranges = models.JSONField(
        default=list, help_text="accepted mask ids of the validation images, same form"
    )
    snapshot_max_mask_id = models.BigIntegerField(
        default=0, help_text="the highest mask id that existed at launch (for every-N schedules)"
    )
    train_masks = models.PositiveIntegerField(default=0)
    train_images = models.PositiveIntegerField(default=0)
    validation_masks = models.PositiveIntegerField(default=0)
    validation_images = models.PositiveIntegerField(default=0)
    config = models.JSONField(default=dict, help_text="the TrainConfig, as a dict")
    loss_curve = models.JSONField(default=list, help_text="[[step, loss], ...], live")
    parent_metrics = models.JSONField(
        default=dict, blank=True, help_text="the parent on the validation split (this round)"
    )
    trigger = models.CharField(max_length=16, default="manual")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="round_unique_number"),
            models.CheckConstraint(condition=Q(number__gte=1), name="round_number_pos"),
        ]

    def __str__(self) -> str:
        return f"round {self.number} of project {self.project_id}"

    @property
    def status(self) -> str:
        return str(self.job.status)

    @property
    def is_active(self) -> bool:
        return not self.job.is_finished


class RoundSettings(models.Model):
    """How a project's rounds train and when they start on their own."""

    project = models.OneToOneField(
        "annotation.Project", on_delete=models.CASCADE, related_name="round_settings"
    )
    min_masks = models.PositiveIntegerField(default=20)
    steps = models.PositiveIntegerField(default=200)
    scope = models.CharField(max_length=16, default="decoder")
    lr = models.FloatField(default=1e-4)
    masks_per_image = models.PositiveIntegerField(default=16)
    auto_promote = models.BooleanField(default=False)
    promote_margin = models.FloatField(default=0.01, help_text="on validation miou@1")
    schedule_cron = models.CharField(
        max_length=100, blank=True, help_text='"minute hour day month weekday", UTC; blank: off'
    )
    every_n_masks = models.PositiveIntegerField(
        null=True, blank=True, help_text="launch after this many newly accepted masks; null: off"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "round settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(scope__in=["decoder", "decoder+prompt", "full"]),
                name="roundsettings_scope_valid",
            ),
            models.CheckConstraint(condition=Q(steps__gte=1), name="roundsettings_steps_pos"),
            models.CheckConstraint(condition=Q(lr__gt=0), name="roundsettings_lr_pos"),
            models.CheckConstraint(
                condition=Q(masks_per_image__gte=1), name="roundsettings_masks_per_image_pos"
            ),
            models.CheckConstraint(
                condition=Q(every_n_masks__isnull=True) | Q(every_n_masks__gte=1),
                name="roundsettings_every_n_pos",
            ),
        ]

    def __str__(self) -> str:
        return f"round settings of project {self.project_id}"

    def save(self, *args: object, **kwargs: object) -> None:
        """Save, then make the project's cron PeriodicTask match ``schedule_cron``."""
        super().save(*args, **kwargs)  # type: ignore[arg-type]
        from training.services.schedule import round_schedule_sync  # services import models

        round_schedule_sync(round_settings=self)
