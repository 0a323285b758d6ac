"""Generator parameters: validation, and the settings of the SA-1B automatic stage."""

import math
from typing import Any

import numpy as np

from engine.sam.amg.rle import OUTPUT_MODES


def sa1b_generator_settings() -> dict[str, Any]:
    """Keyword arguments reproducing the SA-1B fully automatic stage (paper, section 4).

    A 32 x 32 grid on the image plus two crop layers (2 x 2 crops at 16 x 16 points, 4 x 4 at
    8 x 8), regions and holes under 100 px cleaned up, and masks covering 95% of the image or
    more dropped. Use as `SamAutomaticMaskGenerator(model, **sa1b_generator_settings())`.
    """
    return {
        "points_per_side": 32,
        "crop_n_layers": 2,
        "crop_n_points_downscale_factor": 2,
        "min_mask_region_area": 100,
        "max_mask_area_fraction": 0.95,
    }


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _unit(name: str, value: float) -> float:
    number = _finite(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return number


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_parameters(params: dict[str, Any]) -> None:
    """Raise ValueError naming the first bad generator parameter and its value."""
    if (params["points_per_side"] is None) == (params["point_grids"] is None):
        raise ValueError(
            "give exactly one of points_per_side and point_grids, got "
            f"points_per_side={params['points_per_side']!r} and "
            f"point_grids={'None' if params['point_grids'] is None else 'a list'}"
        )
    _count("points_per_batch", params["points_per_batch"], 1)
    # The official generator documents the two score thresholds as "in [0, 1]" (predicted mask
    # quality, stability: both IoUs); outside, a run keeps every mask or none.
    for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
        _unit(name, params[name])
    # Stability compares the masks at mask_threshold +- offset: at 0 or below every mask
    # would score 1 (or above).
    if not _finite("stability_score_offset", params["stability_score_offset"]) > 0.0:
        raise ValueError(
            f"stability_score_offset must be > 0, got {params['stability_score_offset']!r}"
        )
    layers = _count("crop_n_layers", params["crop_n_layers"], 0)
    if not 0.0 <= _finite("crop_overlap_ratio", params["crop_overlap_ratio"]) < 1.0:
        raise ValueError(
            f"crop_overlap_ratio must be in [0, 1), got {params['crop_overlap_ratio']!r}"
        )
    factor = _count("crop_n_points_downscale_factor", params["crop_n_points_downscale_factor"], 1)
    if _finite("min_mask_region_area", params["min_mask_region_area"]) < 0:
        raise ValueError(
            f"min_mask_region_area must be >= 0, got {params['min_mask_region_area']!r}"
        )
    if params["output_mode"] not in OUTPUT_MODES:
        raise ValueError(
            f"output_mode must be one of {OUTPUT_MODES}, got {params['output_mode']!r}"
        )
    fraction = params["max_mask_area_fraction"]
    if fraction is not None and not 0.0 < _finite("max_mask_area_fraction", fraction) <= 1.0:
        raise ValueError(f"max_mask_area_fraction must be in (0, 1] or None, got {fraction!r}")
    if params["points_per_side"] is not None:
        side = _count("points_per_side", params["points_per_side"], 1)
        smallest = int(side / factor**layers)
        if smallest < 1:
            raise ValueError(
                f"points_per_side {side} / crop_n_points_downscale_factor {factor}**"
                f"{layers} leaves no point in the last crop layer"
            )
    else:
        _check_grids(params["point_grids"], layers)


def _check_grids(grids: Any, layers: int) -> None:
    if not isinstance(grids, list | tuple) or len(grids) < layers + 1:
        got = len(grids) if isinstance(grids, list | tuple) else type(grids).__name__
        raise ValueError(f"point_grids needs one grid per crop layer ({layers + 1}), got {got}")
    for index, grid in enumerate(grids):
        array = np.asarray(grid, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
            raise ValueError(f"point_grids[{index}] must be N x 2 (x, y), got shape {array.shape}")
        if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(f"point_grids[{index}] values must be in [0, 1]")
