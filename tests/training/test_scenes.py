"""Synthetic scenes: reproducible, exact visible masks, holes and thin parts, distinct domains."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage  # type: ignore[import-untyped]

from training.loop.scenes import (
    DOMAINS,
    FAMILIES,
    GRAIN,
    HOLED_FAMILIES,
    THIN_FAMILIES,
    Scene,
    generate_scene,
    min_visible_area,
    plan_scene,
    render,
    scene_dataset,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = (120, 160)


def digest(scene: Scene) -> str:
    h = hashlib.sha256(scene.image.tobytes())
    for mask, family in zip(scene.masks, scene.families, strict=True):
        h.update(np.packbits(mask).tobytes())
        h.update(family.encode())
    return h.hexdigest()


def sample(domain: str, count: int = 8, size: tuple[int, int] = (240, 320)) -> list[Scene]:
    return list(scene_dataset(count, domain, first_seed=100, size=size))


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_inputs_give_byte_identical_scenes(domain: str) -> None:
    first, second = generate_scene(7, domain, SMALL), generate_scene(7, domain, SMALL)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.families == second.families
    assert len(first.masks) == len(second.masks)
    for a, b in zip(first.masks, second.masks, strict=True):
        assert np.array_equal(a, b)
    assert digest(first) == digest(second)


def test_identical_in_another_process() -> None:
    code = (
        "from training.loop.scenes import generate_scene\n"
        "from tests.training.test_scenes import digest\n"
        "print(digest(generate_scene(11, 'B', (120, 160))), "
        "digest(generate_scene(11, 'A', (120, 160))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    there = out.stdout.split()
    assert there == [digest(generate_scene(11, "B", SMALL)), digest(generate_scene(11, "A", SMALL))]


def test_seeds_and_domains_change_the_scene() -> None:
    base = digest(generate_scene(3, "A", SMALL))
    assert digest(generate_scene(4, "A", SMALL)) != base
    assert digest(generate_scene(3, "B", SMALL)) != base
    assert len({digest(s) for s in scene_dataset(6, "B", size=SMALL)}) == 6


@pytest.mark.parametrize("size", [(480, 640), (64, 48), (48, 64), (100, 333), (16, 16)])
@pytest.mark.parametrize("domain", DOMAINS)
def test_shapes_dtypes_and_minimum_area(domain: str, size: tuple[int, int]) -> None:
    floor = min_visible_area(size)
    for seed in range(3):
        scene = generate_scene(seed, domain, size)
        assert scene.size == size
        assert scene.image.shape == (*size, 3)
        assert scene.image.dtype == np.uint8
        assert scene.masks, "every scene keeps at least one object"
        assert len(scene.masks) == len(scene.families)
        assert set(scene.families) <= set(FAMILIES[domain])
        assert (scene.seed, scene.domain) == (seed, domain)
        for mask in scene.masks:
            assert mask.shape == size
            assert mask.dtype == np.bool_
            assert int(mask.sum()) >= floor


@pytest.mark.parametrize("domain", DOMAINS)
def test_many_objects_that_overlap(domain: str) -> None:
    counts = []
    occluded = 0
    for seed in range(6):
        plan = plan_scene(seed, domain, (240, 320))
        scene = render(plan)
        counts.append(len(scene.masks))
        occluded += sum(
            int(bool((obj.shape & ~mask).any()))
            for obj, mask in zip(plan.objects, scene.masks, strict=True)
        )
    assert min(counts) >= 4
    assert np.mean(counts) >= 8
    assert occluded >= 10, "objects must really overlap, not sit side by side"


@pytest.mark.parametrize("domain", DOMAINS)
def test_visible_masks_are_disjoint(domain: str) -> None:
    for scene in sample(domain, 4):
        coverage = np.sum(np.stack(scene.masks), axis=0)
        assert coverage.max() == 1
        labels = scene.label_map()
        for index, mask in enumerate(scene.masks):
            assert np.array_equal(labels == index + 1, mask)


@pytest.mark.parametrize("domain", DOMAINS)
def test_each_mask_shows_its_object_in_paint_order(domain: str) -> None:
    for seed in (0, 5, 9):
        plan = plan_scene(seed, domain, SMALL)
        scene = render(plan)
        assert scene.families == [o.family for o in plan.objects]
        covered_above = np.zeros(SMALL, dtype=bool)
        # Walk top to bottom: an object is visible exactly where nothing later covers it.
        for obj, mask in zip(reversed(plan.objects), reversed(scene.masks), strict=True):
            assert np.array_equal(mask, obj.shape & ~covered_above)
            ys, xs = np.nonzero(mask)
            expected = np.clip(np.rint(obj.paint.colours(ys + 0.5, xs + 0.5)), 0, 255)
            assert np.abs(scene.image[ys, xs].astype(float) - expected).max() <= GRAIN
            covered_above |= obj.shape
        background = ~scene.label_map().astype(bool)
        assert np.array_equal(background, ~covered_above)
        expected_bg = np.clip(np.rint(plan.background[background]), 0, 255)
        assert np.abs(scene.image[background].astype(float) - expected_bg).max() <= GRAIN


def has_hole(mask: np.ndarray) -> bool:
    enclosed = ndimage.binary_fill_holes(mask) & ~mask
    return int(enclosed.sum()) >= 4


def has_thin_part(mask: np.ndarray) -> bool:
    # Two 3x3 erosions wipe out anything under ~5 px wide.
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3)), iterations=2)
    return int(mask.sum()) >= 40 and int(eroded.sum()) < 0.5 * int(mask.sum())


@pytest.mark.parametrize("domain", DOMAINS)
def test_holes_and_thin_parts_exist(domain: str) -> None:
    scenes = sample(domain)
    holed = [m for s in scenes for m, f in zip(s.masks, s.families, strict=True) if has_hole(m)]
    holed_families = {
        f for s in scenes for m, f in zip(s.masks, s.families, strict=True) if has_hole(m)
    }
    thin_families = {
        f for s in scenes for m, f in zip(s.masks, s.families, strict=True) if has_thin_part(m)
    }
    assert len(holed) >= 3
    assert holed_families & HOLED_FAMILIES
    assert thin_families & THIN_FAMILIES


def touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_rasterised_ring_and_frame_have_their_hole() -> None:
    # A ring cut by the image border has its hole open to the outside, so only whole ones count.
    holed = {"ring": 0, "frame": 0}
    for domain in DOMAINS:
        for seed in range(6):
            plan = plan_scene(seed, domain, (240, 320))
            for obj in plan.objects:
                whole = not touches_border(obj.shape)
                if obj.family in holed and whole and obj.shape.sum() >= 200:
                    assert has_hole(obj.shape), f"{domain}/{seed}: {obj.family} without hole"
                    holed[obj.family] += 1
    assert min(holed.values()) >= 2


def test_objects_are_shaded_not_flat() -> None:
    for domain in DOMAINS:
        plan = plan_scene(2, domain, (240, 320))
        spreads = []
        for obj in plan.objects:
            ys, xs = np.nonzero(obj.shape)
            luminance = obj.paint.colours(ys + 0.5, xs + 0.5).mean(axis=1)
            spreads.append(float(luminance.std()))
        assert np.median(spreads) > 4.0


def test_domains_differ_in_colour_families_and_texture() -> None:
    a, b = sample("A", 6, SMALL), sample("B", 6, SMALL)
    for scene in a:
        red, _, blue = scene.image.reshape(-1, 3).astype(float).mean(axis=0)
        assert red - blue > 20, "domain A is warm"
    for scene in b:
        red, _, blue = scene.image.reshape(-1, 3).astype(float).mean(axis=0)
        assert blue - red > 15, "domain B is cool"
    families_a = {f for s in a for f in s.families}
    families_b = {f for s in b for f in s.families}
    assert families_a.isdisjoint(families_b)
    assert len(families_a) >= 3
    assert len(families_b) >= 3

    def background_roughness(scenes: list[Scene]) -> float:
        # Mean absolute neighbour difference of grey background pixels: stripes and
        # checkers (B) are far rougher than A's smooth gradients, grain included in both.
        values = []
        for scene in scenes:
            grey = scene.image.astype(float).mean(axis=2)
            bg = ~scene.label_map().astype(bool)
            both = bg[:, 1:] & bg[:, :-1]
            values.append(float(np.abs(np.diff(grey, axis=1))[both].mean()))
        return float(np.mean(values))

    assert background_roughness(b) > 1.5 * background_roughness(a)


def test_scene_arrays_are_read_only() -> None:
    scene = generate_scene(1, "A", (64, 48))
    with pytest.raises(ValueError, match="read-only"):
        scene.image[0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        scene.masks[0][0, 0] = True


def test_scene_dataset_yields_consecutive_seeds() -> None:
    scenes = list(scene_dataset(3, "B", first_seed=40, size=(64, 48)))
    assert [s.seed for s in scenes] == [40, 41, 42]
    assert [digest(s) for s in scenes] == [
        digest(generate_scene(seed, "B", (64, 48))) for seed in (40, 41, 42)
    ]
    assert list(scene_dataset(0, "A")) == []


@pytest.mark.parametrize(
    ("seed", "domain", "size", "message"),
    [
        (-1, "A", (64, 64), "seed"),
        (0, "C", (64, 64), "domain"),
        (0, "A", (8, 64), "size"),
        (0, "A", (64,), "size"),
    ],
)
def test_bad_arguments_are_refused(
    seed: int, domain: str, size: tuple[int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        generate_scene(seed, domain, size)
    with pytest.raises(ValueError, match=message):
        scene_dataset(2, domain, seed, size)
