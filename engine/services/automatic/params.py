"""The generator settings of an automatic or prefill run: defaults, overrides, validation.

A run's settings are resolved once, when it starts, and stored in ``job.params["settings"]``,
so every chunk (on any worker, before or after a resume) generates with exactly the same ones.
Only the generator's JSON-friendly keyword arguments may be set; ``output_mode`` is always
``coco_rle`` (the masks table stores compressed RLE) and ``point_grids`` is not offered (a
grid is ``points_per_side``).
"""

import inspect
import json
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from annotation.errors import DomainError
from annotation.models import Project
from engine.sam.amg import SamAutomaticMaskGenerator, sa1b_generator_settings
from engine.sam.amg.settings import check_parameters

AUTOMATIC = "automatic"
PREFILL = "prefill"
MODES = (AUTOMATIC, PREFILL)


class InvalidAutomaticSettings(DomainError):
    """Generator settings that the automatic generator refuses (unknown key, bad value)."""

    code = "invalid_settings"


def generator_defaults() -> dict[str, Any]:
    """The generator's own keyword defaults (the official ones), settable keys only."""
    signature = inspect.signature(SamAutomaticMaskGenerator.__init__)
    return {
        name: parameter.default
        for name, parameter in signature.parameters.items()
        if name not in {"self", "model", "point_grids", "output_mode"}
    }


SETTABLE = frozenset(generator_defaults())
# Upper bounds the generator itself does not have: beyond them one image takes hours (the grid
# and the crops multiply) or one decoder batch exhausts any GPU's memory.
LIMITS = {"points_per_side": 256, "points_per_batch": 4096, "crop_n_layers": 4}


def check_overrides(overrides: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """A plain dict of ``overrides`` with only settable keys (InvalidAutomaticSettings)."""
    if not isinstance(overrides, Mapping):
        raise InvalidAutomaticSettings(f"{what} must be an object of settings, got {overrides!r}")
    unknown = sorted(str(key) for key in overrides if key not in SETTABLE)
    if unknown:
        raise InvalidAutomaticSettings(
            f"{what}: unknown setting(s) {', '.join(unknown)}; "
            f"settable: {', '.join(sorted(SETTABLE))}",
            details={"unknown": unknown},
        )
    return dict(overrides)


def resolve_settings(
    *,
    mode: str,
    project_settings: Mapping[str, Any],
    params: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The complete, validated generator settings of a run.

    automatic: official defaults < SA-1B settings < the project's ``automatic_settings`` <
    ``params``. prefill: official defaults < ``params`` (the caller's prefill defaults) < the
    project's ``prefill_settings``. Raises InvalidAutomaticSettings naming the bad key/value.
    """
    if mode not in MODES:
        raise InvalidAutomaticSettings(f"mode must be one of {MODES}, got {mode!r}")
    project = check_overrides(project_settings or {}, what=f"the project's {mode}_settings")
    given = check_overrides(params or {}, what="settings")
    resolved = generator_defaults()
    if mode == AUTOMATIC:
        resolved.update(sa1b_generator_settings())
        resolved.update(project)
        resolved.update(given)
    else:
        resolved.update(given)
        resolved.update(project)
    try:
        check_parameters({**resolved, "point_grids": None, "output_mode": "coco_rle"})
    except ValueError as exc:
        raise InvalidAutomaticSettings(str(exc)) from exc
    for name, limit in LIMITS.items():
        if resolved[name] is not None and resolved[name] > limit:
            raise InvalidAutomaticSettings(
                f"{name} must be at most {limit}, got {resolved[name]!r}"
            )
    try:  # stored in JSON columns: refuse what would not round-trip
        return dict(json.loads(json.dumps(resolved, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise InvalidAutomaticSettings(f"settings must be plain JSON values ({exc})") from exc


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """``["points_per_side=16", "max_mask_area_fraction=none"]`` -> typed overrides (CLI).

    Values are read as JSON (numbers, true/false, null), with ``none`` for null; anything else
    is kept as a string, which the validation then refuses with the key named.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidAutomaticSettings(f"--set needs key=value, got {pair!r}")
        text = raw.strip()
        if text.lower() == "none":
            value: Any = None
        else:
            try:
                value = json.loads(text)
            except ValueError:
                value = text
        overrides[key.strip()] = value
    return overrides


@transaction.atomic
def project_automatic_settings_set(*, project: Project, settings: Mapping[str, Any]) -> Project:
    """Store the project's overrides for automatic runs (checked as a whole run would be);
    InvalidAutomaticSettings changes nothing."""
    overrides = check_overrides(settings, what="automatic_settings")
    resolve_settings(mode=AUTOMATIC, project_settings=overrides, params=None)
    project.automatic_settings = overrides
    project.save(update_fields=["automatic_settings"])
    return project
