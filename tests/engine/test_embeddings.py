"""The shared embedding store on PostgreSQL + Redis + local/S3 blobs."""

import base64
import io
import json
import pickle

import numpy as np
import pytest
from django.contrib.auth.models import User

from annotation.imaging import load_rgb_array
from annotation.models import Project
from engine import inference
from engine.models import Job
from engine.sam.predictor import SamPredictor
from engine.services import embeddings as service
from engine.services.embeddings import (
    EmbeddingRefused,
    embedding_compute,
    embedding_from_bytes,
    embedding_key,
    embedding_load,
    embeddings_precompute_run,
    embeddings_precompute_start,
    embeddings_request,
)
from engine.services.jobs import job_cancel
from engine.services.registry import model_version_deploy
from engine.tasks import gpu_compute_embedding
from storage.blobs import get_blob_store
from tests.engine.conftest import add_images, register_golden
from tests.s3server import s3_test_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def encoder_calls(monkeypatch) -> list[int]:
    """Counts images passed to the image encoder (the real one still runs)."""
    calls: list[int] = []
    real = service.embed_images

    def counting(model, images, **kwargs):
        calls.append(len(images))
        return real(model, images, **kwargs)

    monkeypatch.setattr(service, "embed_images", counting)
    return calls


def predict_all(predictor: SamPredictor, height: int, width: int) -> list[np.ndarray]:
    point = np.array([[width * 0.5, height * 0.5]])
    box = np.array([width * 0.1, height * 0.1, width * 0.9, height * 0.8])
    masks_point, _, _ = predictor.predict(point_coords=point, point_labels=np.array([1]))
    masks_box, _, _ = predictor.predict(box=box, multimask_output=False)
    return [masks_point, masks_box]


def run_to_the_end(job: Job) -> Job:
    """Run the job's chunks in-process (the test transaction never fires on_commit)."""
    for _ in range(100):
        embeddings_precompute_run(job_id=job.pk)
        job.refresh_from_db()
        if job.is_finished:
            return job
    raise AssertionError("the job did not finish in 100 chunks")


def test_an_embedding_is_computed_once_and_reused(project, tiny_version, encoder_calls):
    [image] = add_images(project, 1)
    key = embedding_compute(image_id=image.pk, model_version_id=tiny_version.pk)
    stored = get_blob_store().get_bytes(key)
    again = embedding_compute(image_id=image.pk, model_version_id=tiny_version.pk)
    assert again == key == f"embeddings/{tiny_version.pk}/{image.sha256}.npz"
    assert encoder_calls == [1]
    assert get_blob_store().get_bytes(key) == stored
    assert inference.loads_count() >= 1


def test_the_model_is_loaded_once_per_process_for_many_images(project, tiny_version):
    images = add_images(project, 3)
    before = inference.loads_count()
    for image in images:
        embedding_compute(image_id=image.pk, model_version_id=tiny_version.pk)
    assert inference.loads_count() == before + 1


@pytest.mark.parametrize(("dtype", "max_fraction"), [("float32", 0.0), ("float16", 1e-3)])
def test_masks_from_the_stored_embedding_match_set_image(
    project, tiny_version, settings, dtype, max_fraction
):
    settings.MASKLOOP_EMBEDDING_DTYPE = dtype
    [image] = add_images(project, 1)
    embedding_compute(image_id=image.pk, model_version_id=tiny_version.pk)
    stored = embedding_load(image=image, model_version=tiny_version)
    assert stored is not None
    assert stored.original_size == (image.height, image.width)
    model = inference.model_for_version(tiny_version)
    direct = SamPredictor(model)
    direct.set_image(load_rgb_array(get_blob_store().get_bytes(image.blob_key)))
    from_store = SamPredictor(model)
    from_store.set_embedding(stored.embedding, stored.original_size, stored.input_size)
    for expected, got in zip(
        predict_all(direct, image.height, image.width),
        predict_all(from_store, image.height, image.width),
        strict=True,
    ):
        assert expected.shape == got.shape
        assert (expected != got).mean() <= max_fraction


def test_the_stored_dtype_follows_the_setting(project, tiny_version, settings):
    settings.MASKLOOP_EMBEDDING_DTYPE = "float16"
    [image] = add_images(project, 1)
    key = embedding_compute(image_id=image.pk, model_version_id=tiny_version.pk)
    with np.load(io.BytesIO(get_blob_store().get_bytes(key)), allow_pickle=False) as arrays:
        assert arrays["embedding"].dtype == np.float16
        assert arrays["embedding"].shape == (1, 64, 64, 64)


def test_no_stored_embedding_loads_as_none(project, tiny_version):
    [image] = add_images(project, 1)
    assert embedding_load(image=image, model_version=tiny_version) is None


def test_a_stored_pickle_is_refused_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"embedding": _Payload(marker)})
    with pytest.raises(ValueError, match="not a stored embedding"):
        embedding_from_bytes(data)
    assert not marker.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


def test_the_store_works_on_s3(fresh_model_cache, s3_settings, s3_endpoint, s3_bucket):
    s3_project = Project.objects.create(name="on s3")
    version = register_golden(s3_project)
    [image] = add_images(s3_project, 1)
    key = embedding_compute(image_id=image.pk, model_version_id=version.pk)
    listed = s3_test_client(s3_endpoint).list_objects_v2(Bucket=s3_bucket, Prefix="embeddings/")
    assert [entry["Key"] for entry in listed["Contents"]] == [key]
    assert key == f"embeddings/{version.pk}/{image.sha256}.npz"
    stored = embedding_load(image=image, model_version=version)
    assert stored is not None
    assert tuple(stored.embedding.shape) == (1, 64, 64, 64)


def test_the_task_called_with_ids_stores_the_embedding(project, tiny_version):
    [image] = add_images(project, 1)
    gpu_compute_embedding(image.pk, tiny_version.pk)
    key = embedding_key(model_version_id=tiny_version.pk, image_sha256=image.sha256)
    assert get_blob_store().exists(key)


def test_a_precompute_job_embeds_every_image_in_chunks_with_progress(
    project, tiny_version, settings, admin_user: User
):
    settings.MASKLOOP_EMBEDDING_CHUNK = 2
    images = add_images(project, 5)
    model_version_deploy(project=project, version=tiny_version)
    job = embeddings_precompute_start(project=project, user=admin_user)
    assert (job.kind, job.status, job.progress_total) == ("embed", "queued", 5)
    job = run_to_the_end(job)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert (job.progress_done, job.progress) == (5, 1.0)
    assert job.result["computed"] == 5
    assert job.attempts == 1
    for image in images:
        assert embedding_load(image=image, model_version=tiny_version) is not None


def test_a_rerun_skips_the_images_already_embedded(project, tiny_version, encoder_calls):
    add_images(project, 3)
    run_to_the_end(embeddings_precompute_start(project=project, model_version=tiny_version))
    assert sum(encoder_calls) == 3
    second = run_to_the_end(
        embeddings_precompute_start(project=project, model_version=tiny_version)
    )
    assert (second.result["computed"], second.result["skipped"]) == (0, 3)
    assert sum(encoder_calls) == 3


def test_a_cancelled_job_stops_after_its_current_chunk(project, tiny_version, settings):
    settings.MASKLOOP_EMBEDDING_CHUNK = 2
    images = add_images(project, 5)
    job = embeddings_precompute_start(project=project, model_version=tiny_version)
    embeddings_precompute_run(job_id=job.pk)
    job_cancel(job_id=job.pk)
    assert embeddings_precompute_run(job_id=job.pk) is None
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    stored = [embedding_load(image=i, model_version=tiny_version) is not None for i in images]
    assert stored == [True, True, False, False, False]


def test_precompute_without_a_deployed_version_is_refused(project):
    add_images(project, 1)
    with pytest.raises(EmbeddingRefused, match="no deployed model version"):
        embeddings_precompute_start(project=project)
    assert not Job.objects.exists()


def test_a_request_for_images_of_another_project_is_refused(project, tiny_version):
    other = Project.objects.create(name="elsewhere")
    [image] = add_images(other, 1)
    with pytest.raises(EmbeddingRefused, match="not in the project"):
        embeddings_request(images=[image], model_version=tiny_version)


def test_requested_images_go_to_the_gpu_queue_ahead_of_bulk_chunks(
    project, tiny_version, redis_broker, django_capture_on_commit_callbacks
):
    images = add_images(project, 3)
    embedding_compute(image_id=images[0].pk, model_version_id=tiny_version.pk)
    with django_capture_on_commit_callbacks(execute=True):
        embeddings_precompute_start(project=project, model_version=tiny_version)
        queued = embeddings_request(images=images[::-1], model_version=tiny_version)
    assert queued == [images[2].pk, images[1].pk]  # in the order asked, the stored one left out
    # kombu's Redis transport: one list per priority step, popped in this order.
    assert redis_broker.llen("gpu") == 2  # priority 0: annotators' requests
    assert redis_broker.llen("gpu\x06\x169") == 1  # priority 9: the bulk chunk
    first = json.loads(redis_broker.lindex("gpu", -1))  # BRPOP takes from the right
    assert first["headers"]["task"] == "engine.tasks.gpu_compute_embedding"
    assert json.loads(base64.b64decode(first["body"]))[0] == [images[2].pk, tiny_version.pk]
    bulk = json.loads(redis_broker.lindex("gpu\x06\x169", -1))
    assert bulk["headers"]["task"] == "engine.tasks.gpu_precompute_embeddings"


def test_a_request_without_priority_waits_behind_annotators_requests(
    project, tiny_version, redis_broker, django_capture_on_commit_callbacks
):
    [image] = add_images(project, 1)
    with django_capture_on_commit_callbacks(execute=True):
        embeddings_request(images=[image], model_version=tiny_version, priority=False)
    assert redis_broker.llen("gpu") == 0
    assert redis_broker.llen("gpu\x06\x169") == 1
