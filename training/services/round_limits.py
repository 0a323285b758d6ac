"""The allowed range of each numeric round setting, in one table.

The settings service (``round_settings_update``), the launch service (``train_config_for``,
for the stored settings and for a launch's overrides) and the launch API's serializer all read
it, so no path can store a value that a launch would refuse, nor launch with one.
"""

import math
from dataclasses import dataclass
from typing import Any

from annotation.errors import DomainError


class InvalidRoundSettings(DomainError):
    code = "invalid_round_settings"


@dataclass(frozen=True)
class SettingRange:
    minimum: int | float
    maximum: int | float
    integer: bool

    def describe(self) -> str:
        if self.integer:
            return f"{self.minimum:,} to {self.maximum:,}"
        return f"{self.minimum:g} to {self.maximum:g}"


ROUND_SETTING_RANGES: dict[str, SettingRange] = {
    "min_masks": SettingRange(1, 10_000_000, integer=True),
    "steps": SettingRange(1, 10_000_000, integer=True),
    "masks_per_image": SettingRange(1, 4096, integer=True),
    "every_n_masks": SettingRange(1, 10_000_000, integer=True),
    "lr": SettingRange(1e-12, 1.0, integer=False),
    # A margin on validation mIoU@1, itself within [0, 1]: above 1 nothing could be promoted.
    "promote_margin": SettingRange(0.0, 1.0, integer=False),
}


def round_setting_checked(name: str, value: Any) -> int | float:
    """``value`` of setting ``name`` (a float for a float setting); InvalidRoundSettings naming
    the field and its range when it is of the wrong type or out of range."""
    allowed = ROUND_SETTING_RANGES[name]
    numeric = int if allowed.integer else int | float
    valid = (
        not isinstance(value, bool)
        and isinstance(value, numeric)
        and math.isfinite(value)
        and allowed.minimum <= value <= allowed.maximum
    )
    if not valid:
        kind = "an integer" if allowed.integer else "a number"
        raise InvalidRoundSettings(
            f"{name} must be {kind} from {allowed.describe()}, not {value!r}",
            details={"field": name, "minimum": allowed.minimum, "maximum": allowed.maximum},
        )
    return value if allowed.integer else float(value)


def serializer_bounds(name: str) -> dict[str, Any]:
    """``min_value`` / ``max_value`` keyword arguments of a DRF number field for ``name``."""
    allowed = ROUND_SETTING_RANGES[name]
    return {"min_value": allowed.minimum, "max_value": allowed.maximum}
