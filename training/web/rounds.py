"""The rounds page of a project (admins): launch form, round list with live progress and loss
curve (the page polls the JSON API), cancel buttons and the round settings form."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.errors import DomainError
from annotation.models import Project
from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import project_get_for_user
from training.loop.optim import SCOPES
from training.selectors import (
    round_get,
    round_settings_get,
    rounds_for_project,
    validation_split_get,
)
from training.services.rounds import active_round, round_cancel, round_launch
from training.services.schedule import round_settings_update


def _admin_project(request: HttpRequest, project_id: int) -> Project:
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_admin(user=request.user, project=project)
    return project


def _number(raw: str | None, *, name: str, cast: type[int] | type[float]) -> Any:
    """A form number; a blank field is None, anything else that is not a number is refused."""
    if raw is None or not raw.strip():
        return None
    try:
        return cast(raw.strip())
    except ValueError:
        raise DomainError(f"{name} must be a number, not {raw[:40]!r}") from None


@require_GET
@login_required
def rounds_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _admin_project(request, project_id)
    rounds = list(rounds_for_project(project=project)[:100])
    context = {
        "project": project,
        "rounds": rounds,
        "active": active_round(project=project),
        "round_settings": round_settings_get(project=project),
        "split": validation_split_get(project=project),
        "scopes": SCOPES,
    }
    return render(request, "training/rounds.html", context)


@require_POST
@login_required
def round_launch_view(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _admin_project(request, project_id)
    overrides: dict[str, Any] = {}
    try:
        for name, cast in (("steps", int), ("lr", float), ("masks_per_image", int)):
            value = _number(request.POST.get(name), name=name, cast=cast)
            if value is not None:
                overrides[name] = value
        if request.POST.get("scope"):
            overrides["scope"] = request.POST["scope"]
        if request.POST.get("augment"):
            overrides["augment"] = True
        training_round = round_launch(
            project=project, user=acting_user(request.user), overrides=overrides
        )
    except DomainError as exc:
        messages.error(request, f"The round was not launched: {exc.message}")
    else:
        messages.success(request, f"Round {training_round.number} is queued.")
    return redirect("project-rounds", project_id=project.pk)


@require_POST
@login_required
def round_cancel_view(request: HttpRequest, project_id: int, number: int) -> HttpResponse:
    project = _admin_project(request, project_id)
    training_round = round_cancel(training_round=round_get(project=project, number=number))
    messages.info(request, f"Round {number} is {training_round.job.get_status_display().lower()}.")
    return redirect("project-rounds", project_id=project.pk)


@require_POST
@login_required
def round_settings_view(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _admin_project(request, project_id)
    post = request.POST
    try:
        values: dict[str, Any] = {
            "min_masks": _number(post.get("min_masks"), name="min_masks", cast=int),
            "steps": _number(post.get("steps"), name="steps", cast=int),
            "lr": _number(post.get("lr"), name="lr", cast=float),
            "masks_per_image": _number(
                post.get("masks_per_image"), name="masks_per_image", cast=int
            ),
            "promote_margin": _number(
                post.get("promote_margin"), name="promote_margin", cast=float
            ),
        }
        values = {name: value for name, value in values.items() if value is not None}
        values["scope"] = post.get("scope", "decoder")
        values["auto_promote"] = post.get("auto_promote") == "on"
        values["schedule_cron"] = post.get("schedule_cron", "")
        values["every_n_masks"] = _number(post.get("every_n_masks"), name="every_n_masks", cast=int)
        round_settings_update(project=project, values=values)
    except DomainError as exc:
        messages.error(request, f"The settings were not saved: {exc.message}")
    else:
        messages.success(request, "Round settings saved.")
    return redirect("project-rounds", project_id=project.pk)
