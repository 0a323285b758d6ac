"""SA-1B clean-up of one mask: fill small holes, remove small islands (8-connectivity)."""

import numpy as np
from scipy import ndimage  # type: ignore[import-untyped]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """H x W bool -> (cleaned mask, whether it changed).

    mode "holes": background components smaller than `area_thresh` pixels become foreground
    (the outer background too, when it is that small). mode "islands": foreground components
    smaller than it are removed; when every island is that small the largest is kept.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    fill_holes = mode == "holes"
    working = ~mask if fill_holes else mask
    labels, count = ndimage.label(working, structure=EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    if fill_holes:
        keep_label = np.concatenate([[True], small])  # the mask itself plus the small holes
    else:
        keep_label = np.concatenate([[False], ~small])
        if not keep_label.any():
            keep_label[int(np.argmax(sizes)) + 1] = True
    return keep_label[labels], True
