"""Server-side decoding: prompts -> masks against the stored embedding, mask refs, the LRUs.

The fixtures (tests/engine/decode_fixtures.py: a project with a deployed golden tiny version
with an ONNX decoder, an embedded image) are shared with the other decode tests.
"""

import base64
import io
import json
import math
import pickle
import time

import numpy as np
import pytest
import torch
from django.core.cache import caches
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from PIL import Image as PilImage

from annotation.services.projects import project_create
from engine import inference
from engine.models import ModelVersion
from engine.services import mask_refs
from engine.services.decode import (
    InvalidMaskRef,
    InvalidPrompt,
)
from engine.services.embeddings import embedding_compute
from engine.services.mask_refs import mask_refs_forget_recent
from engine.services.registry import model_version_deploy
from engine.services.serving import (
    EmbeddingNotReady,
    ModelVersionGone,
    NoDeployedVersion,
    embedding_cache_reads,
    embedding_cached,
)
from tests.engine.conftest import GOLDEN_CHECKPOINT
from tests.engine.decode_fixtures import (  # fixtures shared with the other decode tests
    IMAGE_SIZE,
    add_image,
    carol,
    cats,
    decode,
    fresh_caches,
    golden_onnx,
    image,
    reference_predictor,
    register,
    rle_pixels,
    second_checkpoint,
    store_embedding,
    version,
)

pytestmark = pytest.mark.django_db

__all__ = ["carol", "cats", "fresh_caches", "golden_onnx", "image", "second_checkpoint", "version"]


# --- parity with the bare predictor ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "labels", "box"),
    [
        ([[150.5, 40.0]], [1], None),
        ([[20, 30], [180, 100]], [1, 0], None),
        (None, None, [10, 12, 150, 110]),
        ([[60, 60]], [0], [10, 12, 150, 110]),
        ([[0, 0], [200, 120]], [1, 1], None),  # the image's corners are inside
    ],
)
def test_a_decode_equals_the_predictor_on_the_same_embedding(
    image, version, annotator_user, points, labels, box
):
    result = decode(annotator_user, image, points=points, labels=labels, box=box)
    expected_masks, expected_scores, _ = reference_predictor(image, version).predict(
        point_coords=None if points is None else np.array(points, dtype=float),
        point_labels=None if labels is None else np.array(labels),
        box=None if box is None else np.array(box, dtype=float),
        multimask_output=result.multimask,
    )
    assert result.model_version == version
    assert (result.width, result.height) == (200, 120)
    assert len(result.masks) == len(expected_masks)
    for got, mask, score in zip(result.masks, expected_masks, expected_scores, strict=True):
        assert got.rle is not None
        assert got.png is None
        assert got.rle["size"] == [120, 200]
        assert np.array_equal(rle_pixels(got.rle), mask)
        assert got.score == float(score)


@pytest.mark.parametrize(
    ("points", "labels", "box", "multimask", "expected"),
    [
        ([[50, 50]], [1], None, None, 3),  # one click is ambiguous: three candidates
        ([[50, 50]], [0], None, None, 3),
        ([[50, 50], [90, 60]], [1, 1], None, None, 1),  # more prompts: the single-mask token
        (None, None, [10, 10, 90, 90], None, 1),
        ([[50, 50]], [1], [10, 10, 90, 90], None, 1),
        ([[50, 50], [90, 60]], [1, 0], None, True, 3),  # an explicit choice wins
        ([[50, 50]], [1], None, False, 1),
    ],
)
def test_multimask_defaults_to_three_candidates_for_one_point_only(
    image, annotator_user, points, labels, box, multimask, expected
):
    result = decode(
        annotator_user, image, points=points, labels=labels, box=box, multimask=multimask
    )
    assert result.multimask is (expected == 3)
    assert len(result.masks) == expected
    assert len({mask.mask_ref for mask in result.masks}) == expected


def test_a_mask_ref_feeds_that_candidates_logits_back_as_mask_input(image, version, annotator_user):
    first = decode(annotator_user, image, points=[[100, 60]], labels=[1])
    predictor = reference_predictor(image, version)
    _, _, low_res = predictor.predict(
        point_coords=np.array([[100.0, 60.0]]), point_labels=np.array([1])
    )
    chosen = 2
    second = decode(
        annotator_user,
        image,
        points=[[100, 60], [30, 20]],
        labels=[1, 0],
        mask_ref=first.masks[chosen].mask_ref,
    )
    # The ref keeps the logits as float16: the decode equals the predictor fed those values.
    kept = low_res[chosen : chosen + 1].astype(np.float16).astype(np.float32)
    points, labels = np.array([[100.0, 60.0], [30.0, 20.0]]), np.array([1, 0])
    masks, scores, _ = predictor.predict(
        point_coords=points, point_labels=labels, mask_input=kept, multimask_output=False
    )
    assert np.array_equal(rle_pixels(second.masks[0].rle), masks[0])
    assert second.masks[0].score == float(scores[0])
    # ... and hardly differs from feeding the float32 logits.
    exact, exact_scores, _ = predictor.predict(
        point_coords=points,
        point_labels=labels,
        mask_input=low_res[chosen : chosen + 1],
        multimask_output=False,
    )
    assert (exact[0] != masks[0]).mean() <= 1e-3
    assert abs(float(exact_scores[0]) - second.masks[0].score) < 1e-3
    # The previous mask changes the answer: it was really used.
    without = decode(annotator_user, image, points=[[100, 60], [30, 20]], labels=[1, 0])
    assert without.masks[0].score != second.masks[0].score


def test_png_output_has_the_same_pixels_as_rle(image, annotator_user):
    rle = decode(annotator_user, image, points=[[100, 60]], labels=[1])
    png = decode(annotator_user, image, points=[[100, 60]], labels=[1], output_format="png")
    for as_rle, as_png in zip(rle.masks, png.masks, strict=True):
        assert as_png.rle is None
        assert as_png.png is not None
        decoded = PilImage.open(io.BytesIO(base64.b64decode(as_png.png)))
        assert (decoded.format, decoded.mode) == ("PNG", "1")
        assert np.array_equal(np.array(decoded).astype(bool), rle_pixels(as_rle.rle))
        assert as_png.score == as_rle.score


# --- bad prompts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "labels", "box", "message"),
    [
        ([[201, 10]], [1], None, "outside"),
        ([[10, -0.5]], [1], None, "outside"),
        ([[math.nan, 10]], [1], None, "NaN"),
        ([[10, math.inf]], [1], None, "Infinity"),
        ([[10, 10]] * 10_000, [1] * 10_000, None, "at most 64"),
        (None, None, [10, 10, 10, 50], "no area"),
        (None, None, [10, 10, 50, 10], "no area"),
        (None, None, [50, 10, 10, 40], "x1 >= x0"),
        (None, None, [10, 10, 250, 50], "outside"),
        (None, None, [10, 10, math.nan, 50], "NaN"),
        (None, None, [10, 10, 50], "box must be"),
        ([[10, 10]], [1, 0], None, "1 points but 2 labels"),
        ([[10, 10]], [2], None, "0 (background) or 1"),
        ([[10, 10]], [True], None, "integers 0 or 1"),
        ([[10, 10]], [1.0], None, "integers 0 or 1"),
        ([["10", 10]], [1], None, "[x, y] numbers"),
        ([[10, 10, 3]], [1], None, "[x, y] numbers"),
        ([10, 10], [1, 1], None, "[x, y] numbers"),
        ({"x": 1}, [1], None, "points must be a list"),
        (None, None, None, "no prompt"),
        ([], [], None, "no prompt"),
    ],
)
def test_a_bad_prompt_is_invalid_prompt_naming_the_problem(
    image, annotator_user, points, labels, box, message
):
    with pytest.raises(InvalidPrompt) as caught:
        decode(annotator_user, image, points=points, labels=labels, box=box)
    assert caught.value.code == "invalid_prompt"
    assert caught.value.status_code == 400
    assert message in caught.value.message
    assert len(caught.value.message) <= 500


def test_the_point_limit_follows_the_setting(image, annotator_user, settings):
    settings.MASKLOOP_MAX_PROMPT_POINTS = 3
    points = [[10, 10], [20, 20], [30, 30]]
    assert len(decode(annotator_user, image, points=points, labels=[1, 0, 1]).masks) == 1
    with pytest.raises(InvalidPrompt, match="4 points: at most 3"):
        decode(annotator_user, image, points=[*points, [40, 40]], labels=[1, 0, 1, 1])


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


# --- versions -------------------------------------------------------------------------------------


def test_a_deleted_version_is_gone_and_names_the_deployed_one(
    cats, image, version, annotator_user, second_checkpoint
):
    newer = register(cats, second_checkpoint)
    model_version_deploy(project=cats, version=newer)
    old_id = version.pk
    version.delete()
    with pytest.raises(ModelVersionGone) as caught:
        decode(annotator_user, image, model_version_id=old_id, points=[[5, 5]], labels=[1])
    assert caught.value.status_code == 409
    assert caught.value.deployed_version == newer
    assert f"model version {old_id} was deleted" in caught.value.message


def test_a_retired_or_foreign_version_is_gone(cats, image, version, annotator_user, admin_user):
    dogs = project_create(name="dogs", creator=admin_user)
    foreign = register(dogs, GOLDEN_CHECKPOINT)
    with pytest.raises(ModelVersionGone) as caught:
        decode(annotator_user, image, model_version_id=foreign.pk, points=[[5, 5]], labels=[1])
    assert caught.value.deployed_version == version
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.RETIRED)
    image.project.refresh_from_db()
    with pytest.raises(ModelVersionGone, match="is retired") as caught:
        decode(annotator_user, image, model_version_id=version.pk, points=[[5, 5]], labels=[1])
    assert caught.value.deployed_version is None  # the deployed one is retired too


def test_without_a_deployed_version_nothing_can_be_decoded(cats, annotator_user):
    image = add_image(cats)
    with pytest.raises(NoDeployedVersion) as caught:
        decode(annotator_user, image, points=[[5, 5]], labels=[1])
    assert (caught.value.status_code, caught.value.code) == (409, "no_deployed_version")


# --- a missing embedding --------------------------------------------------------------------------


def test_a_missing_embedding_is_queued_once_with_priority_and_answered_409(
    cats, version, annotator_user, redis_broker, django_capture_on_commit_callbacks
):
    image = add_image(cats)
    for _ in range(3):  # the tool retries; the queue gets one task
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(EmbeddingNotReady):
            decode(annotator_user, image, points=[[5, 5]], labels=[1])
    assert redis_broker.llen("gpu") == 1  # priority 0: the list the worker pops first
    message = json.loads(redis_broker.lindex("gpu", -1))
    assert message["headers"]["task"] == "engine.tasks.gpu_compute_embedding"
    assert message["headers"]["argsrepr"] == f"[{image.pk}, {version.pk}]"
    # Once the worker stored it, the decode works.
    embedding_compute(image_id=image.pk, model_version_id=version.pk)
    assert len(decode(annotator_user, image, points=[[5, 5]], labels=[1]).masks) == 3


# --- the per-process caches -----------------------------------------------------------------------


def test_the_model_is_loaded_once_and_each_embedding_read_once(
    cats, image, version, annotator_user
):
    second = add_image(cats, seed=2)
    store_embedding(second, version)
    inference.clear_model_cache()
    loads, reads = inference.loads_count(), embedding_cache_reads()
    for _ in range(3):
        for target in (image, second):
            decode(annotator_user, target, points=[[50, 50]], labels=[1])
    assert inference.loads_count() == loads + 1
    assert embedding_cache_reads() == reads + 2


def test_every_torch_operation_of_a_decode_runs_on_the_decoder_thread(
    cats, version, annotator_user, monkeypatch
):
    """A request thread that runs one parallel torch op keeps an OpenMP team, which slows
    every later decode of the process (engine.services.serving.on_decoder_thread): the model
    load, the embedding read and the decode all happen on the decoder thread."""
    import threading

    from engine.services import decode as decode_service
    from engine.services import serving

    image = add_image(cats, seed=3)
    store_embedding(image, version)
    inference.clear_model_cache()
    threads: dict[str, set[int]] = {}

    def spy(name, function):
        def called(*args, **kwargs):
            threads.setdefault(name, set()).add(threading.get_ident())
            return function(*args, **kwargs)

        monkeypatch.setattr(decode_service if name != "embedding_load" else serving, name, called)

    spy("model_for_version", decode_service.model_for_version)
    spy("embedding_cached", decode_service.embedding_cached)
    spy("embedding_load", serving.embedding_load)
    spy("predict_masks", decode_service.predict_masks)
    first = decode(annotator_user, image, points=[[20, 20]], labels=[1])
    decode(
        annotator_user,
        image,
        points=[[20, 20], [30, 30]],
        labels=[1, 0],
        mask_ref=first.masks[0].mask_ref,
    )
    assert set(threads) == {
        "model_for_version",
        "embedding_cached",
        "embedding_load",
        "predict_masks",
    }
    decoder = serving._decoder_ident
    assert decoder is not None
    assert decoder != threading.get_ident()
    assert all(idents == {decoder} for idents in threads.values()), threads
    # The embedding endpoint's cache read from a request thread parses on the decoder too.
    serving.embedding_cache_clear()
    threads.clear()
    assert embedding_cached(image=image, model_version=version) is not None
    assert threads["embedding_load"] == {decoder}


def test_the_embedding_lru_evicts_beyond_its_size(cats, image, version, annotator_user, settings):
    settings.MASKLOOP_EMBEDDING_CACHE_SIZE = 1
    second = add_image(cats, seed=2)
    store_embedding(second, version)
    reads = embedding_cache_reads()
    for target in (image, image, second, second, image):
        decode(annotator_user, target, points=[[50, 50]], labels=[1])
    assert embedding_cache_reads() == reads + 3  # image, second, image again


def test_a_float16_blob_is_served_as_float32(cats, version, settings):
    settings.MASKLOOP_EMBEDDING_DTYPE = "float16"
    image = add_image(cats)
    embedding_compute(image_id=image.pk, model_version_id=version.pk)
    cached = embedding_cached(image=image, model_version=version)
    assert cached is not None
    assert cached.embedding.dtype == torch.float32
    assert tuple(cached.embedding.shape) == (1, 64, 64, 64)
    assert cached.original_size == IMAGE_SIZE
