"""Server-side decoding: prompts -> masks against the stored embedding, mask refs, the LRUs.

The fixtures (tests/engine/decode/conftest.py: a project with a deployed golden tiny version
with an ONNX decoder, an embedded image) are shared with the other decode tests.
"""

import base64
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image as PilImage

from annotation.services.projects import project_create
from engine import inference
from engine.models import ModelVersion
from engine.services.decode import (
    InvalidPrompt,
)
from engine.services.embeddings import embedding_compute
from engine.services.registry import model_version_deploy
from engine.services.serving import (
    EmbeddingNotReady,
    ModelVersionGone,
    NoDeployedVersion,
    embedding_cache_reads,
    embedding_cached,
)
from tests.engine.conftest import GOLDEN_CHECKPOINT
from tests.engine.decode.helpers import (
    IMAGE_SIZE,
    add_image,
    decode,
    reference_predictor,
    register,
    rle_pixels,
    store_embedding,
)

pytestmark = pytest.mark.django_db


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
    assert f"model version {old_id} is not a version of project 'cats'" in caught.value.message


def test_a_retired_or_foreign_version_is_gone(cats, image, version, annotator_user, admin_user):
    dogs = project_create(name="dogs", creator=admin_user)
    foreign = register(dogs, GOLDEN_CHECKPOINT)
    with pytest.raises(ModelVersionGone) as caught:
        decode(annotator_user, image, model_version_id=foreign.pk, points=[[5, 5]], labels=[1])
    assert caught.value.deployed_version == version
    # It exists, in another project: "deleted" would be false.
    assert caught.value.message.startswith(
        f"model version {foreign.pk} is not a version of project 'cats';"
    )
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
