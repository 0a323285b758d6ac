"""Mask refs are written to the shared cache behind the decode's answer (engine.services.mask_refs):
the answer does not wait for the write, the process that answered has the ref at once, another
process finds it when the write lands a moment later, and a failed write loses nothing else."""

import logging
import threading
import time

import pytest

from engine.services import mask_refs
from engine.services.decode import InvalidMaskRef, masks_decode
from engine.services.mask_refs import mask_refs_flush, mask_refs_forget_recent
from tests.engine.decode.helpers import (
    decode,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def held_writes(monkeypatch):
    """Shared cache writes of mask refs wait until the returned event is set."""
    release = threading.Event()
    write = mask_refs._write_entry

    def held(*args, **kwargs):
        assert release.wait(timeout=30)
        write(*args, **kwargs)

    monkeypatch.setattr(mask_refs, "_write_entry", held)
    yield release
    release.set()
    mask_refs_flush()


def answer(user, image, **prompt):
    """masks_decode as the API calls it: returning before the refs' write lands."""
    return masks_decode(
        user=user, image=image, model_version_id=None, labels=[1], box=None, **prompt
    )


def test_the_answer_does_not_wait_for_the_shared_cache_write(image, annotator_user, held_writes):
    result = answer(annotator_user, image, points=[[40, 30]])  # returns with the write held
    ref = result.masks[0].mask_ref
    # The process that answered reads its ref back from memory meanwhile.
    assert answer(annotator_user, image, points=[[40, 30]], mask_ref=ref).masks
    assert mask_refs._pending  # both still on their way to the shared cache


def test_another_process_finds_a_ref_whose_write_lands_a_moment_later(
    image, annotator_user, held_writes
):
    result = answer(annotator_user, image, points=[[40, 30]])
    ref = result.masks[0].mask_ref
    mask_refs_forget_recent()  # another web process: only the shared cache can have it
    threading.Timer(0.01, held_writes.set).start()  # the write lands 10 ms after the answer
    logits = mask_refs.mask_ref_load(
        ref=ref, user=annotator_user, image=image, model_version=result.model_version
    )
    assert logits.shape == (1, 256, 256)


def test_a_ref_whose_write_never_lands_is_refused_after_the_grace(
    image, annotator_user, held_writes
):
    result = answer(annotator_user, image, points=[[40, 30]])
    ref = result.masks[0].mask_ref
    mask_refs_forget_recent()
    started = time.monotonic()
    with pytest.raises(InvalidMaskRef, match="unknown or expired"):
        mask_refs.mask_ref_load(
            ref=ref, user=annotator_user, image=image, model_version=result.model_version
        )
    waited = time.monotonic() - started
    assert mask_refs.PENDING_WRITE_GRACE_SECONDS * 0.8 <= waited < 5


def test_a_failed_shared_cache_write_is_logged_and_the_answer_stands(
    image, annotator_user, monkeypatch, caplog
):
    cache_class = type(mask_refs.caches["default"])  # each thread has its own cache object
    real_set = cache_class.set

    def broken(self, key, *args, **kwargs):
        if key.startswith("mask-ref:"):  # the entries; the slot counter still works
            raise ConnectionError("cache server gone")
        return real_set(self, key, *args, **kwargs)

    monkeypatch.setattr(cache_class, "set", broken)
    with caplog.at_level(logging.ERROR, logger="engine.services.mask_refs"):
        result = answer(annotator_user, image, points=[[40, 30]])
        mask_refs_flush()
    assert "could not be written to the shared cache" in caplog.text
    ref = result.masks[0].mask_ref
    assert decode(annotator_user, image, points=[[40, 30]], labels=[1], mask_ref=ref).masks


def test_through_the_api_the_write_waits_until_the_response_is_sent(image, annotator_user):
    from rest_framework.test import APIRequestFactory, force_authenticate

    from engine.api.decode import ImageDecodeApi

    request = APIRequestFactory().post(
        f"/api/images/{image.pk}/decode/", {"points": [[40, 30]], "labels": [1]}, format="json"
    )
    force_authenticate(request, user=annotator_user)
    response = ImageDecodeApi.as_view()(request, image_id=image.pk)
    assert response.status_code == 200
    ref = response.data["masks"][0]["mask_ref"]
    version = image.project.deployed_version
    assert not mask_refs._pending  # held: nothing competes with sending the answer
    mask_refs_forget_recent()
    with pytest.raises(InvalidMaskRef):  # not in the shared cache yet
        mask_refs.mask_ref_load(ref=ref, user=annotator_user, image=image, model_version=version)
    response.close()  # what the WSGI server does once the body is sent: request_finished
    mask_refs_flush()
    logits = mask_refs.mask_ref_load(
        ref=ref, user=annotator_user, image=image, model_version=version
    )
    assert logits.shape == (1, 256, 256)
