"""The decode endpoint's fast paths answer exactly what the plain ones did.

Transposed masks from the cropped upsampling (bit for bit equal to ``SamPredictor.predict``),
the uncompressed file cache (same file format as Django's), one database query per request,
and the decoder thread.
"""

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from django.core.cache.backends.filebased import FileBasedCache

from engine.cache import UncompressedFileBasedCache
from engine.models import ModelVersion
from engine.sam.checkpoint import load_sam
from engine.sam.modeling import Sam
from engine.sam.predictor import SamPredictor, upscale_masks
from engine.sam.transforms import ResizeLongestSide
from engine.services.serving import on_decoder_thread
from tests.engine.conftest import GOLDEN_CHECKPOINT
from tests.engine.decode.helpers import (
    register,
    store_embedding,
)
from tests.engine.decode.test_decode_api import post_decode
from tests.factories import client_for

# (H, W): wide, tall, square, odd sides whose resize has a fractional last low-res row
SIZES = [(120, 200), (200, 120), (1000, 1500), (999, 1001), (64, 64), (17, 1023), (2000, 300)]


@pytest.fixture(scope="module")
def golden_sam() -> Sam:
    return load_sam(GOLDEN_CHECKPOINT).eval()


def low_res_logits(seed: int, channels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, channels, 256, 256), generator=generator) * 8.0


@pytest.mark.parametrize("size", SIZES)
def test_the_cropped_upsampling_equals_postprocess_masks_bit_for_bit(golden_sam, size):
    input_size = ResizeLongestSide.get_preprocess_shape(size[0], size[1], golden_sam.img_size)
    low_res = low_res_logits(sum(size))
    with torch.no_grad():
        expected = golden_sam.postprocess_masks(low_res, input_size, size)
        got = upscale_masks(low_res, input_size, size, golden_sam.img_size)
    assert got.shape == expected.shape == (1, 3, *size)
    assert torch.equal(got, expected)


def test_an_image_size_that_is_no_multiple_of_the_low_res_side_upsamples_it_whole():
    low_res, size, input_size = low_res_logits(3), (300, 500), (600, 1000)
    full = nnf.interpolate(low_res, (1000, 1000), mode="bilinear", align_corners=False)
    expected = nnf.interpolate(full[..., :600, :1000], size, mode="bilinear", align_corners=False)
    assert torch.equal(upscale_masks(low_res, input_size, size, 1000), expected)


@pytest.mark.parametrize("size", SIZES)
def test_transposed_prediction_gives_the_masks_of_predict(golden_sam, size):
    predictor = SamPredictor(golden_sam)
    generator = torch.Generator().manual_seed(size[0] * size[1])
    channels = golden_sam.prompt_encoder.embed_dim
    predictor.set_embedding(torch.randn((1, channels, 64, 64), generator=generator), size)
    height, width = size
    rng = np.random.default_rng(7)
    previous = None
    for clicks in (1, 2, 3):
        points = rng.uniform((0, 0), (width, height), size=(clicks, 2))
        labels = np.array([1] + [0] * (clicks - 1))
        box = np.array([0, 0, width * 0.7, height * 0.8]) if clicks == 3 else None
        masks, scores, low_res = predictor.predict(
            points, labels, box, previous, multimask_output=clicks == 1
        )
        transposed, t_scores, t_low_res = predictor.predict_transposed(
            points, labels, box, previous, multimask_output=clicks == 1
        )
        assert transposed.shape == (masks.shape[0], width, height)
        assert transposed.dtype == np.bool_
        assert transposed.flags.c_contiguous
        for mask, mask_t in zip(masks, transposed, strict=True):
            as_coco_reads = mask_t.view(np.uint8).T  # what the RLE encoder gets: no copy
            assert as_coco_reads.flags.f_contiguous
            assert as_coco_reads.base is not None
            assert np.array_equal(as_coco_reads, mask)
        assert np.array_equal(scores, t_scores)
        assert np.array_equal(low_res, t_low_res)
        previous = low_res[int(np.argmax(scores))][None]


def test_transposed_prediction_needs_an_embedding_and_a_prompt(golden_sam):
    predictor = SamPredictor(golden_sam)
    with pytest.raises(RuntimeError, match="must be set"):
        predictor.predict_transposed(np.array([[1.0, 1.0]]), np.array([1]))
    predictor.set_embedding(torch.zeros((1, golden_sam.prompt_encoder.embed_dim, 64, 64)), (8, 8))
    with pytest.raises(ValueError, match="no prompt"):
        predictor.predict_transposed()


# --- the file cache -------------------------------------------------------------------------------


def test_the_file_cache_writes_uncompressed_files_that_djangos_reads(tmp_path: Path):
    ours = UncompressedFileBasedCache(str(tmp_path), {})
    djangos = FileBasedCache(str(tmp_path), {})
    logits = np.zeros((3, 256, 256), dtype=np.float16).tobytes()  # would compress 1000-fold
    ours.set("ref", {"logits": logits}, timeout=60)
    [written] = list(tmp_path.glob("*.djcache"))
    assert written.stat().st_size > len(logits)  # stored, not deflated
    assert djangos.get("ref") == {"logits": logits}
    djangos.set("theirs", [1, 2, 3], timeout=60)
    assert ours.get("theirs") == [1, 2, 3]
    ours.set("brief", 1, timeout=-1)  # expired at once, as Django's
    assert ours.get("brief") is None


# --- the database -------------------------------------------------------------------------------


def click(client, image, version_id: int | None = None):
    body = {"model_version": version_id, "points": [[50, 50]], "labels": [1]}
    return post_decode(client, image.pk, body)


@pytest.mark.django_db
def test_a_decode_reads_the_database_once_for_the_deployed_version(
    image, version, annotator_user, django_assert_num_queries
):
    client = client_for(annotator_user)
    assert click(client, image).status_code == 200  # loads the model and the embedding
    for version_id in (None, version.pk):
        with django_assert_num_queries(1):  # image, project, deployed version and role
            assert click(client, image, version_id).status_code == 200


@pytest.mark.django_db
def test_another_version_costs_one_query_and_its_deletion_is_seen_at_once(
    cats, image, version, annotator_user, second_checkpoint, django_assert_num_queries
):
    other = register(cats, second_checkpoint)
    store_embedding(image, other)
    client = client_for(annotator_user)
    assert click(client, image, other.pk).status_code == 200
    with django_assert_num_queries(2):
        assert click(client, image, other.pk).status_code == 200
    ModelVersion.objects.filter(pk=other.pk).update(status=ModelVersion.Status.RETIRED)
    retired = click(client, image, other.pk)  # the very next request sees it
    assert (retired.status_code, retired.json()["code"]) == (409, "model_version_gone")
    deployed_id = version.pk
    assert click(client, image, deployed_id).status_code == 200
    version.delete()
    gone = click(client, image, deployed_id)
    assert (gone.status_code, gone.json()["code"]) == (409, "model_version_gone")
    assert gone.json()["deployed_version"] is None


@pytest.mark.django_db
def test_a_superuser_decodes_without_a_membership_and_an_outsider_gets_404(image, outsider_user):
    assert click(client_for(outsider_user), image).status_code == 404
    outsider_user.is_superuser = True
    outsider_user.save()
    assert click(client_for(outsider_user), image).status_code == 200


# --- the decoder thread ---------------------------------------------------------------------------


def test_decodes_run_on_one_thread_and_their_errors_reach_the_caller():
    idents = {on_decoder_thread(threading.get_ident) for _ in range(3)}
    assert len(idents) == 1
    assert threading.get_ident() not in idents
    nested = on_decoder_thread(lambda: on_decoder_thread(threading.get_ident))
    assert {nested} == idents  # a nested call runs in place instead of waiting for itself

    def fails() -> None:
        raise ValueError("bad prompt")

    with pytest.raises(ValueError, match="bad prompt"):
        on_decoder_thread(fails)


def test_the_file_cache_culls_expired_then_oldest_entries_never_the_newest(tmp_path: Path):
    cache = UncompressedFileBasedCache(str(tmp_path), {"OPTIONS": {"MAX_ENTRIES": 9}})
    cache.set("expired", 1, timeout=-1)  # written expired: the first to go
    for index in range(9):
        cache._last_cull = float("-inf")  # check on every set here (normally once a second)
        cache.set(f"ref{index}", index, timeout=60)
        path = cache._key_to_file(f"ref{index}")  # type: ignore[attr-defined]
        os.utime(path, (1000 + index, 1000 + index))
    cache._last_cull = float("-inf")
    cache.set("newest", "n", timeout=60)  # 10 files >= 9: cull a third (3) before writing
    assert cache.get("expired") is None
    assert [cache.get(f"ref{index}") for index in range(9)] == [None, None, *range(2, 9)]
    assert cache.get("newest") == "n"


def test_the_file_cache_lists_its_folder_at_most_once_a_second(tmp_path: Path, monkeypatch):
    cache = UncompressedFileBasedCache(str(tmp_path), {})
    listings: list[int] = []
    original = cache._list_cache_files  # type: ignore[attr-defined]

    def counting() -> list[str]:
        listings.append(1)
        return original()

    monkeypatch.setattr(cache, "_list_cache_files", counting)
    for index in range(5):
        cache.set(f"key{index}", index, timeout=60)
    assert len(listings) == 1
    assert [cache.get(f"key{index}") for index in range(5)] == list(range(5))
