"""Grid-symmetry augmentation: exact turns of image and masks together, drawn per slot from the
seed, full scope only, and selectable per round."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.training.test_interactive import small_sam
from training.loop.data import apply_symmetry, samples_from_scenes, slot_symmetry
from training.loop.scenes import generate_scene
from training.loop.trainer import TrainConfig, train
from training.models import RoundSettings
from training.services.rounds import RoundRefused, train_config_for


def test_the_eight_symmetries_are_distinct_exact_turns() -> None:
    array = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    turned = [apply_symmetry(array, symmetry) for symmetry in range(8)]
    assert turned[0] is array
    np.testing.assert_array_equal(turned[1], np.rot90(array, 1, axes=(0, 1)))
    np.testing.assert_array_equal(turned[2], array[::-1, ::-1])
    np.testing.assert_array_equal(turned[4], array[:, ::-1])
    assert [t.shape[:2] for t in turned] == [(5, 7), (7, 5)] * 4
    assert len({(t.shape, t.tobytes()) for t in turned}) == 8
    pixels = sorted(map(tuple, array.reshape(-1, 3)))
    for t in turned:  # a permutation of the pixels: nothing resampled, nothing lost
        assert t.flags.c_contiguous
        assert sorted(map(tuple, t.reshape(-1, 3))) == pixels


def test_masks_stay_on_their_object() -> None:
    scene = generate_scene(3, "A", (48, 64))
    mask = scene.masks[-1]
    colours = sorted(map(tuple, scene.image[mask]))
    for symmetry in range(8):
        image, turned = apply_symmetry(scene.image, symmetry), apply_symmetry(mask, symmetry)
        assert sorted(map(tuple, image[turned])) == colours


@pytest.mark.parametrize("symmetry", [-1, 8])
def test_an_unknown_symmetry_is_refused(symmetry: int) -> None:
    with pytest.raises(ValueError, match=r"symmetry must be in 0\.\.7"):
        apply_symmetry(np.zeros((2, 2)), symmetry)


def test_slots_draw_every_symmetry_reproducibly() -> None:
    drawn = [slot_symmetry(0, slot) for slot in range(200)]
    assert drawn == [slot_symmetry(0, slot) for slot in range(200)]
    assert set(drawn) == set(range(8))
    assert drawn != [slot_symmetry(1, slot) for slot in range(200)]


@pytest.mark.parametrize("scope", ["decoder", "decoder+prompt"])
def test_augment_needs_the_full_scope(scope: str) -> None:
    with pytest.raises(ValueError, match="augment needs scope 'full'"):
        TrainConfig(scope=scope, augment=True)


def test_augmented_training_is_deterministic_and_trains_on_turned_images(tmp_path: Path) -> None:
    samples = samples_from_scenes(generate_scene(seed, "A", (96, 128)) for seed in range(2))
    options: dict[str, Any] = {"steps": 2, "iterations": 2, "masks_per_image": 2, "scope": "full"}

    def weights(augment: bool, name: str) -> dict[str, torch.Tensor]:
        model = small_sam(seed=1)
        train(model, samples, TrainConfig(**options, augment=augment), work_dir=tmp_path / name)
        return model.state_dict()

    first, again, plain = weights(True, "a"), weights(True, "b"), weights(False, "c")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], plain[k]) for k in first)


def test_a_round_can_ask_for_augmentation() -> None:
    settings = RoundSettings(steps=10, scope="full", lr=1e-3, masks_per_image=4)
    assert train_config_for(round_settings=settings, overrides={"augment": True}).augment
    assert not train_config_for(round_settings=settings).augment
    settings.scope = "decoder"
    with pytest.raises(RoundRefused, match="augment needs scope 'full'"):
        train_config_for(round_settings=settings, overrides={"augment": True})
    with pytest.raises(RoundRefused, match="true or false"):
        train_config_for(round_settings=settings, overrides={"augment": "yes"})
