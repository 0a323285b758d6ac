"""Training samples: validation, the >90% filter, masks in the input frame, seeded sampling."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from training.loop.data import (
    TrainSample,
    masks_to_frame,
    resize_image,
    samples_from_scenes,
    slot_image,
    slot_masks,
    slot_prompt_seed,
    step_slots,
    training_images,
)
from training.loop.scenes import generate_scene

IMG = np.zeros((96, 128, 3), dtype=np.uint8)


def rect(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


def test_samples_from_scenes_key_by_sha256_and_share_arrays() -> None:
    scenes = [generate_scene(seed, "A", (96, 128)) for seed in (0, 1)]
    samples = samples_from_scenes(scenes)
    assert [len(s.masks) for s in samples] == [len(s.masks) for s in scenes]
    assert samples[0].image is scenes[0].image
    assert samples[0].masks[0] is scenes[0].masks[0]
    assert samples[0].key != samples[1].key
    again = samples_from_scenes([generate_scene(0, "A", (96, 128))])
    assert again[0].key == samples[0].key
    expected = hashlib.sha256(repr(scenes[0].image.shape).encode() + scenes[0].image.tobytes())
    assert samples[0].key == expected.hexdigest()


def test_mask_of_another_shape_is_refused_with_its_index() -> None:
    good = rect((96, 128), slice(0, 10), slice(0, 10))
    with pytest.raises(ValueError, match=r"'img': mask 1 has shape \(96, 127\)"):
        TrainSample("img", IMG, (good, np.zeros((96, 127), dtype=bool)))


def test_non_bool_mask_and_bad_image_are_refused() -> None:
    with pytest.raises(ValueError, match="mask 0 must be a bool array"):
        TrainSample("img", IMG, (np.zeros((96, 128), dtype=np.uint8),))
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        TrainSample("img", IMG.astype(np.float32), ())
    with pytest.raises(ValueError, match="H x W x 3"):
        TrainSample("img", np.zeros((96, 128, 4), dtype=np.uint8), ())


def test_large_and_empty_masks_are_dropped_and_empty_images_skipped() -> None:
    shape = (96, 128)
    big = np.ones(shape, dtype=bool)
    big[0, :12] = False  # 99.9% of the image
    at_limit = rect(shape, slice(0, 86), slice(0, 128))  # 89.6%
    empty = np.zeros(shape, dtype=bool)
    samples = [
        TrainSample("a", IMG, (big, at_limit, empty)),
        TrainSample("b", IMG, (big,)),
        TrainSample("c", IMG, ()),
    ]
    images, dropped = training_images(samples, 0.9)
    assert [image.sample.key for image in images] == ["a"]
    assert images[0].mask_ids.tolist() == [1]
    assert dropped == 3


def test_no_samples_or_no_masks_left_raise() -> None:
    with pytest.raises(ValueError, match="no training samples"):
        training_images([], 0.9)
    full = np.ones((96, 128), dtype=bool)
    with pytest.raises(ValueError, match=r"no masks left.*1 mask\(s\) in 2 sample.*90%"):
        training_images([TrainSample("a", IMG, (full,)), TrainSample("b", IMG, ())], 0.9)


def test_masks_land_where_the_resized_image_lies_in_the_frame() -> None:
    # 96 x 128 -> 192 x 256 in a 256 input; at side 64 each cell is 4 x 4 input pixels.
    mask = rect((96, 128), slice(24, 48), slice(32, 96))
    frame = masks_to_frame([mask], img_size=256, side=64)
    expected = np.zeros((64, 64), dtype=bool)
    expected[12:24, 16:48] = True
    assert frame.shape == (1, 64, 64)
    assert np.array_equal(frame[0].numpy(), expected)


def test_padding_stays_empty_for_a_tall_image() -> None:
    full = np.ones((128, 96), dtype=bool)  # -> 256 x 192: columns 48.. of 64 are padding
    frame = masks_to_frame([full, full], img_size=256, side=64)[1].numpy()
    assert frame[:, :48].all()
    assert not frame[:, 48:].any()


def test_frame_masks_equal_nearest_resize_then_half_coverage() -> None:
    rng = np.random.default_rng(3)
    height, width = 77, 131
    masks = [rng.random((height, width)) < p for p in (0.2, 0.5, 0.8)]
    masks.append(rect((height, width), slice(5, 70), slice(40, 41)))  # a 1 px line
    frame = masks_to_frame(masks, img_size=256, side=64).numpy()
    new_w, new_h = 256, int(height * 256 / width + 0.5)
    for index, mask in enumerate(masks):
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (new_w, new_h), Image.Resampling.NEAREST
        )
        padded = np.zeros((256, 256), dtype=np.float64)
        padded[:new_h, :new_w] = np.asarray(resized) > 0
        coverage = padded.reshape(64, 4, 64, 4).mean(axis=(1, 3))
        assert np.array_equal(frame[index], coverage >= 0.5), index


def test_masks_to_frame_rejects_a_side_that_does_not_divide() -> None:
    with pytest.raises(ValueError, match="must divide"):
        masks_to_frame([np.zeros((8, 8), dtype=bool)], img_size=256, side=60)


def test_resize_image_gives_channels_first_longest_side() -> None:
    resized = resize_image(np.full((96, 128, 3), 7, dtype=np.uint8), 256)
    assert tuple(resized.shape) == (3, 192, 256)
    assert int(resized.max()) == int(resized.min()) == 7


def test_every_image_is_seen_once_per_epoch_in_a_seeded_order() -> None:
    epoch0 = [slot_image(5, slot, 7) for slot in range(7)]
    epoch1 = [slot_image(5, slot, 7) for slot in range(7, 14)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(7))
    assert epoch0 != epoch1
    assert epoch0 == [slot_image(5, slot, 7) for slot in range(7)]
    assert epoch0 != [slot_image(6, slot, 7) for slot in range(7)]


def test_masks_are_drawn_without_replacement_up_to_the_limit() -> None:
    ids = np.arange(10, 30, dtype=np.int64)
    chosen = slot_masks(0, 4, ids, 16)
    assert len(chosen) == len(set(chosen.tolist())) == 16
    assert set(chosen.tolist()) <= set(ids.tolist())
    assert np.array_equal(chosen, slot_masks(0, 4, ids, 16))
    assert not np.array_equal(chosen, slot_masks(0, 5, ids, 16))
    assert np.array_equal(slot_masks(0, 4, ids[:3], 16), ids[:3])
    assert slot_prompt_seed(0, 4) != slot_prompt_seed(0, 5)


def test_ranks_batches_and_micro_batches_cover_the_same_slots() -> None:
    def slots(world: int, per_step: int, acc: int, step: int) -> list[int]:
        return sorted(
            slot
            for rank in range(world)
            for micro in range(acc)
            for slot in step_slots(
                step, micro, images_per_step=per_step, accumulate=acc, rank=rank, world=world
            )
        )

    for step in (0, 3):
        assert slots(2, 3, 1, step) == slots(1, 6, 1, step) == slots(1, 3, 2, step)
        assert slots(1, 6, 1, step) == list(range(6 * step, 6 * step + 6))
