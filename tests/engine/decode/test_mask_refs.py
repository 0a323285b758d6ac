"""Mask refs of server-side decoding: ownership, expiry, the in-memory copies, the per-user ring
and its slot reservations (engine.services.mask_refs). Fixtures: tests/engine/decode/conftest.py.
"""

import pickle
import time

import numpy as np
import pytest
from django.core.cache import caches
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache

from engine.services import mask_refs
from engine.services.decode import InvalidMaskRef
from engine.services.mask_refs import mask_refs_forget_recent
from tests.engine.decode.helpers import (
    add_image,
    decode,
    register,
    store_embedding,
)

pytestmark = pytest.mark.django_db


# --- mask refs ------------------------------------------------------------------------------------


def test_a_mask_ref_is_refused_for_another_user_image_or_version(
    cats, image, version, annotator_user, carol, second_checkpoint
):
    ref = decode(annotator_user, image, points=[[100, 60]], labels=[1]).masks[0].mask_ref
    other_image = add_image(cats, seed=2)
    store_embedding(other_image, version)
    other_version = register(cats, second_checkpoint)
    store_embedding(image, other_version)
    attempts = [
        (carol, image, None),
        (annotator_user, other_image, None),
        (annotator_user, image, other_version.pk),
    ]
    for user, target, version_id in attempts:
        with pytest.raises(InvalidMaskRef, match="another user, image or model version"):
            decode(
                user,
                target,
                model_version_id=version_id,
                points=[[50, 50]],
                labels=[1],
                mask_ref=ref,
            )
    # The owner still may use it.
    assert decode(annotator_user, image, points=[[50, 50]], labels=[1], mask_ref=ref).masks


@pytest.mark.parametrize(
    "ref", ["", "nonsense", "a" * 30, "a" * 30 + ".x", "../../etc" + ".1", "a" * 300 + ".0"]
)
def test_a_malformed_mask_ref_is_refused(image, annotator_user, ref):
    with pytest.raises(InvalidMaskRef) as caught:
        decode(annotator_user, image, points=[[50, 50]], labels=[1], mask_ref=ref)
    assert caught.value.code == "invalid_mask_ref"


def test_an_expired_or_out_of_range_mask_ref_is_refused(image, annotator_user):
    single = decode(annotator_user, image, points=[[10, 10], [90, 90]], labels=[1, 1])
    token = single.masks[0].mask_ref.rsplit(".", 1)[0]
    with pytest.raises(InvalidMaskRef, match="unknown or expired"):
        decode(annotator_user, image, points=[[50, 50]], labels=[1], mask_ref=f"{token}.1")
    caches["default"].clear()  # what expiry does, in the shared cache and in memory
    mask_refs_forget_recent()
    with pytest.raises(InvalidMaskRef, match="unknown or expired"):
        decode(annotator_user, image, points=[[50, 50]], labels=[1], mask_ref=f"{token}.0")


def test_a_mask_ref_is_read_from_memory_or_from_the_shared_cache(image, annotator_user):
    first = decode(annotator_user, image, points=[[40, 30]], labels=[1])
    ref = first.masks[1].mask_ref
    expected = mask_refs.mask_ref_load(
        ref=ref, user=annotator_user, image=image, model_version=first.model_version
    )
    assert expected.shape == (1, 256, 256)
    caches["default"].clear()  # culled from the shared cache: this process still has it
    kept = mask_refs.mask_ref_load(
        ref=ref, user=annotator_user, image=image, model_version=first.model_version
    )
    np.testing.assert_array_equal(kept, expected)
    second = decode(annotator_user, image, points=[[40, 30]], labels=[1])
    ref = second.masks[2].mask_ref
    mask_refs_forget_recent()  # another web process: only the shared cache has it
    shared = mask_refs.mask_ref_load(
        ref=ref, user=annotator_user, image=image, model_version=second.model_version
    )
    assert shared.dtype == np.float32
    assert shared.shape == (1, 256, 256)
    assert decode(annotator_user, image, points=[[40, 30]], labels=[1], mask_ref=ref).masks


def test_the_memory_copy_of_a_mask_ref_expires_with_it(
    image, annotator_user, monkeypatch, settings
):
    result = decode(annotator_user, image, points=[[10, 10]], labels=[1])
    ref = result.masks[0].mask_ref
    caches["default"].clear()
    later = time.monotonic() + int(settings.MASKLOOP_MASK_REF_SECONDS) + 1
    monkeypatch.setattr(mask_refs.time, "monotonic", lambda: later)
    with pytest.raises(InvalidMaskRef, match="unknown or expired"):
        mask_refs.mask_ref_load(
            ref=ref, user=annotator_user, image=image, model_version=result.model_version
        )


def test_this_process_keeps_only_the_latest_mask_refs_in_memory(image, annotator_user):
    refs = [
        decode(annotator_user, image, points=[[10 + i, 10]], labels=[1]).masks[0].mask_ref
        for i in range(mask_refs.RECENT_REFS + 1)
    ]
    caches["default"].clear()
    with pytest.raises(InvalidMaskRef):  # the oldest left memory, and the shared cache lost it
        decode(annotator_user, image, points=[[5, 5]], labels=[1], mask_ref=refs[0])
    assert decode(annotator_user, image, points=[[5, 5]], labels=[1], mask_ref=refs[-1]).masks


def test_a_users_mask_refs_are_a_ring_of_the_setting(image, annotator_user, settings):
    settings.MASKLOOP_MASK_REFS_PER_USER = 3
    refs = [
        decode(annotator_user, image, points=[[10 + i, 10]], labels=[1]).masks[0].mask_ref
        for i in range(4)
    ]
    assert sorted({int(ref.split("_", 1)[0]) for ref in refs[1:]}) == [0, 1, 2]
    mask_refs_forget_recent()  # another web process: only the shared cache has them
    with pytest.raises(InvalidMaskRef, match="unknown or expired"):  # its slot was reused
        decode(annotator_user, image, points=[[5, 5]], labels=[1], mask_ref=refs[0])
    for ref in refs[1:]:
        mask_refs_forget_recent()
        assert decode(annotator_user, image, points=[[5, 5]], labels=[1], mask_ref=ref).masks
    stored = [caches["default"].get(f"mask-ref:{annotator_user.pk}:{slot}") for slot in range(4)]
    assert [entry is not None for entry in stored] == [True, True, True, False]


def test_ring_slots_are_reserved_from_the_shared_counter_a_block_at_a_time(
    image, annotator_user, settings
):
    settings.MASKLOOP_MASK_REFS_PER_USER = 100
    block = mask_refs.SLOT_BLOCK
    counter = f"mask-ref-count:{annotator_user.pk}"

    def slots(count):
        return [
            int(
                decode(annotator_user, image, points=[[10, 10]], labels=[1])
                .masks[0]
                .mask_ref.split("_", 1)[0]
            )
            for _ in range(count)
        ]

    assert slots(block + 1) == list(range(1, block + 2))  # consecutive in one process
    assert caches["default"].get(counter) == 2 * block  # two round trips for block + 1 decodes
    mask_refs_forget_recent()  # another process: its own reservation, after this one's
    assert slots(1) == [2 * block + 1]
    assert caches["default"].get(counter) == 3 * block


def test_another_users_mask_ref_is_not_found_in_the_shared_cache(image, annotator_user, carol):
    ref = decode(annotator_user, image, points=[[100, 60]], labels=[1]).masks[0].mask_ref
    mask_refs_forget_recent()
    with pytest.raises(InvalidMaskRef, match="unknown or expired"):
        decode(carol, image, points=[[50, 50]], labels=[1], mask_ref=ref)


def test_mask_refs_expire_after_the_setting(image, annotator_user, settings):
    settings.MASKLOOP_MASK_REF_SECONDS = 1
    result = decode(annotator_user, image, points=[[10, 10]], labels=[1])
    slot = int(result.masks[0].mask_ref.split("_", 1)[0])
    key = f"mask-ref:{annotator_user.pk}:{slot}"
    cache = caches["default"]
    # Read the stored expiry time instead of sleeping: LocMemCache keeps it beside each key, the
    # file cache pickles it at the start of the key's file.
    if isinstance(cache, LocMemCache):
        expiry = cache._expire_info[cache.make_and_validate_key(key)]  # type: ignore[attr-defined]
    else:
        assert isinstance(cache, FileBasedCache)
        with open(cache._key_to_file(key), "rb") as stored:  # type: ignore[attr-defined]
            expiry = pickle.load(stored)
    assert 0 < expiry - time.time() <= 1.0
