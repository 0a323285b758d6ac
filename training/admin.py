"""Django admin for retrain rounds, their settings and validation splits (read mostly: rounds
are launched, cancelled and promoted through the rounds page, the dashboard, the API or the
management commands, which check roles and locks)."""

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from training.models import RoundSettings, TrainingRound, ValidationSplit
from training.services.schedule import EDITABLE, InvalidRoundSettings, round_settings_checked


@admin.register(TrainingRound)
class TrainingRoundAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "number", "job", "parent_version", "produced_version"]
    list_filter = ["project"]
    list_select_related = ["project", "job", "parent_version", "produced_version"]
    raw_id_fields = ["project", "job", "parent_version", "produced_version", "created_by"]
    readonly_fields = [field.name for field in TrainingRound._meta.fields]


class RoundSettingsForm(forms.ModelForm):
    """The admin's form checks the values as the rounds page and the API do (same ranges)."""

    class Meta:
        model = RoundSettings
        fields = ["project", *EDITABLE]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        values = {name: cleaned[name] for name in EDITABLE if name in cleaned}
        try:
            cleaned.update(round_settings_checked(values))
        except InvalidRoundSettings as exc:
            raise ValidationError(exc.message) from exc
        return cleaned


@admin.register(RoundSettings)
class RoundSettingsAdmin(admin.ModelAdmin):
    form = RoundSettingsForm
    list_display = ["project", "steps", "scope", "lr", "auto_promote", "every_n_masks"]
    raw_id_fields = ["project"]


@admin.register(ValidationSplit)
class ValidationSplitAdmin(admin.ModelAdmin):
    list_display = ["project", "fraction", "seed", "created_at"]
    raw_id_fields = ["project"]
    readonly_fields = [field.name for field in ValidationSplit._meta.fields]
