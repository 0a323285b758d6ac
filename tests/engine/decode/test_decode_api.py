"""REST: decode, an image's embedding (status and float32 bytes), the ONNX decoder download."""

import hashlib
import io
import json

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
from rest_framework.test import APIClient

from engine.models import ModelVersion
from engine.sam.onnx_export import OUTPUT_NAMES
from engine.sam.transforms import ResizeLongestSide
from engine.services.embeddings import embedding_compute, embedding_key, embedding_load
from engine.services.registry import model_version_deploy
from storage.blobs import get_blob_store
from tests.engine.decode.helpers import (
    add_image,
    reference_predictor,
    register,
    rle_pixels,
    store_embedding,
)
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def post_decode(client: APIClient, image_id: int, body: dict | str):
    """POST a body (a dict, or raw JSON text for what json.dumps cannot write)."""
    raw = body if isinstance(body, str) else json.dumps(body)
    return client.post(f"/api/images/{image_id}/decode/", data=raw, content_type="application/json")


# --- decode ---------------------------------------------------------------------------------------


def test_a_click_answers_three_candidates_equal_to_the_predictor(image, version, annotator_user):
    response = post_decode(
        client_for(annotator_user), image.pk, {"points": [[120, 45]], "labels": [1]}
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["model_version"], body["multimask"]) == (version.pk, True)
    assert (body["width"], body["height"]) == (200, 120)
    masks, scores, _ = reference_predictor(image, version).predict(
        point_coords=np.array([[120.0, 45.0]]), point_labels=np.array([1])
    )
    assert [sorted(mask) for mask in body["masks"]] == [["mask_ref", "rle", "score"]] * 3
    for got, mask, score in zip(body["masks"], masks, scores, strict=True):
        assert np.array_equal(rle_pixels(got["rle"]), mask)
        assert got["score"] == float(score)


def test_a_decode_answer_says_where_its_time_went(image, version, annotator_user):
    response = post_decode(
        client_for(annotator_user), image.pk, {"points": [[120, 45]], "labels": [1]}
    )
    assert response.status_code == 200
    metrics = {}
    for metric in response["Server-Timing"].split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        metrics[name] = dict(param.split("=", 1) for param in params)
    assert sorted(metrics) == ["decoder", "view"]
    decoder, view = float(metrics["decoder"]["dur"]), float(metrics["view"]["dur"])
    assert 0 < decoder <= view  # ms; the view's time includes the decoder call


def test_a_box_with_a_previous_mask_round_trips_through_the_api(image, version, annotator_user):
    client = client_for(annotator_user)
    first = post_decode(client, image.pk, {"points": [[120, 45]], "labels": [1]}).json()
    body = {
        "model_version": version.pk,
        "points": [[120, 45]],
        "labels": [1],
        "box": [60, 10, 190, 100],
        "mask_ref": first["masks"][1]["mask_ref"],
        "format": "png",
    }
    response = post_decode(client, image.pk, body)
    assert response.status_code == 200, response.json()
    answer = response.json()
    assert answer["multimask"] is False
    [mask] = answer["masks"]
    assert sorted(mask) == ["mask_ref", "png", "score"]
    # The ref answered in the first call refines the second: feed it back once more.
    again = post_decode(client, image.pk, {**body, "mask_ref": mask["mask_ref"]})
    assert again.status_code == 200


def test_an_image_of_another_project_is_404_and_anonymous_is_refused(
    image, outsider_user, admin_user
):
    outsider = post_decode(client_for(outsider_user), image.pk, {"points": [[5, 5]], "labels": [1]})
    anonymous = post_decode(client_for(None), image.pk, {"points": [[5, 5]], "labels": [1]})
    missing = post_decode(client_for(admin_user), 10**9, {"points": [[5, 5]], "labels": [1]})
    assert outsider.status_code == missing.status_code == 404
    assert outsider.json()["code"] == "not_found"
    assert anonymous.status_code in (401, 403)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"points": [[NaN, 10]], "labels": [1]}', "NaN"),
        ('{"points": [[10, Infinity]], "labels": [1]}', "Infinity"),
        ({"points": [[10, 10]] * 10_000, "labels": [1] * 10_000}, "at most 64"),
        ({"box": [20, 20, 20, 80]}, "no area"),
        ({"points": [[500, 10]], "labels": [1]}, "outside"),
        ({"points": [[10, 10]], "labels": []}, "labels"),
        ({}, "no prompt"),
    ],
)
def test_a_bad_prompt_is_400_invalid_prompt(image, annotator_user, body, needle):
    response = post_decode(client_for(annotator_user), image.pk, body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_prompt", response.json()
    assert needle in response.json()["detail"]


def test_a_bad_field_is_a_400_with_a_code(image, annotator_user):
    client = client_for(annotator_user)
    wrong_format = post_decode(
        client, image.pk, {"points": [[5, 5]], "labels": [1], "format": "gif"}
    )
    not_json = client.post(
        f"/api/images/{image.pk}/decode/", data="points=1", content_type="text/plain"
    )
    assert wrong_format.status_code == 400
    assert wrong_format.json()["code"] == "invalid"
    assert wrong_format.json()["detail"].startswith("format:")
    assert not_json.status_code == 415


def test_a_mask_ref_of_another_user_or_image_is_400(cats, image, version, annotator_user, carol):
    ref = post_decode(
        client_for(annotator_user), image.pk, {"points": [[50, 50]], "labels": [1]}
    ).json()["masks"][0]["mask_ref"]
    other = add_image(cats, seed=2)
    store_embedding(other, version)
    prompt = {"points": [[60, 60]], "labels": [1], "mask_ref": ref}
    by_carol = post_decode(client_for(carol), image.pk, prompt)
    on_other_image = post_decode(client_for(annotator_user), other.pk, prompt)
    unknown = post_decode(
        client_for(annotator_user), image.pk, {**prompt, "mask_ref": "x" * 24 + ".0"}
    )
    for response in (by_carol, on_other_image, unknown):
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_mask_ref"


def test_a_version_deleted_while_working_is_409_with_the_deployed_one(
    cats, image, version, annotator_user, second_checkpoint
):
    client = client_for(annotator_user)
    prompt = {"model_version": version.pk, "points": [[50, 50]], "labels": [1]}
    assert post_decode(client, image.pk, prompt).status_code == 200
    newer = register(cats, second_checkpoint, name="round 1")
    model_version_deploy(project=cats, version=newer)
    version.delete()  # while the annotator is still on the old one
    gone = post_decode(client, image.pk, prompt)
    assert gone.status_code == 409
    body = gone.json()
    assert body["code"] == "model_version_gone"
    assert body["deployed_version"] == {
        "id": newer.pk,
        "name": "round 1",
        "arch": "vit_tiny",
        "onnx_url": None,
    }
    # The tool reloads the deployed version: its embedding is queued, then decoding works.
    retry = {**prompt, "model_version": newer.pk}
    assert post_decode(client, image.pk, retry).json()["code"] == "embedding_not_ready"
    store_embedding(image, newer)
    assert post_decode(client, image.pk, retry).status_code == 200


def test_a_missing_embedding_is_409_and_queued_with_priority(
    cats, version, annotator_user, redis_broker, django_capture_on_commit_callbacks
):
    fresh = add_image(cats, seed=3)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_decode(
            client_for(annotator_user), fresh.pk, {"points": [[5, 5]], "labels": [1]}
        )
    assert response.status_code == 409
    assert response.json()["code"] == "embedding_not_ready"
    assert redis_broker.llen("gpu") == 1
    assert json.loads(redis_broker.lindex("gpu", -1))["headers"]["argsrepr"] == (
        f"[{fresh.pk}, {version.pk}]"
    )


# --- the embedding, for the browser decoder -------------------------------------------------------


def test_the_embedding_status_is_ready_with_its_shape_and_sizes(image, version, annotator_user):
    response = client_for(annotator_user).get(f"/api/images/{image.pk}/embedding/")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "model_version": {
            "id": version.pk,
            "name": "golden tiny",
            "arch": "vit_tiny",
            "onnx_url": f"/api/model-versions/{version.pk}/onnx/",
        },
        "embedding_url": f"/api/images/{image.pk}/embedding/data/?model_version={version.pk}",
        "shape": [1, 64, 64, 64],
        "input_size": list(ResizeLongestSide.get_preprocess_shape(120, 200, 1024)),
        "original_size": [120, 200],
    }
    assert response.json()["input_size"] == [614, 1024]


def test_a_missing_embedding_is_202_queued_once_however_often_polled(
    cats, version, annotator_user, redis_broker, django_capture_on_commit_callbacks
):
    fresh = add_image(cats, seed=4)
    client = client_for(annotator_user)
    with django_capture_on_commit_callbacks(execute=True):
        answers = [client.get(f"/api/images/{fresh.pk}/embedding/") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert answers[0].json() == {
        "status": "queued",
        "model_version": answers[0].json()["model_version"],
    }
    assert answers[0].json()["model_version"]["id"] == version.pk
    assert redis_broker.llen("gpu") == 1
    embedding_compute(image_id=fresh.pk, model_version_id=version.pk)
    assert client.get(f"/api/images/{fresh.pk}/embedding/").json()["status"] == "ready"


def test_the_embedding_status_answers_409_without_a_usable_version(
    cats, image, version, annotator_user
):
    client = client_for(annotator_user)
    gone = client.get(f"/api/images/{image.pk}/embedding/?model_version={version.pk + 1000}")
    assert gone.status_code == 409
    assert gone.json()["code"] == "model_version_gone"
    assert f"{version.pk + 1000} is not a version of project 'cats'" in gone.json()["detail"]
    assert gone.json()["deployed_version"]["id"] == version.pk
    cats.deployed_version = None
    cats.save(update_fields=["deployed_version"])
    none = client.get(f"/api/images/{image.pk}/embedding/")
    assert (none.status_code, none.json()["code"]) == (409, "no_deployed_version")


def test_the_embedding_data_is_the_stored_embedding_as_float32(image, version, annotator_user):
    client = client_for(annotator_user)
    url = client.get(f"/api/images/{image.pk}/embedding/").json()["embedding_url"]
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Embedding-Shape"] == "1,64,64,64"
    data = response.content
    got = np.frombuffer(data, dtype="<f4").reshape(1, 64, 64, 64)
    stored = embedding_load(image=image, model_version=version)
    assert stored is not None
    assert np.array_equal(got, stored.embedding.numpy())
    # The blob is float16 by default: the bytes are exactly its values widened.
    key = embedding_key(model_version_id=version.pk, image_sha256=image.sha256)
    with np.load(io.BytesIO(get_blob_store().get_bytes(key))) as arrays:
        assert arrays["embedding"].dtype == np.float16
        assert np.array_equal(got, arrays["embedding"].astype(np.float32))
    cached = client.get(url, HTTP_IF_NONE_MATCH=response["ETag"])
    assert cached.status_code == 304


def test_the_embedding_data_is_404_before_it_is_computed(
    cats, version, annotator_user, outsider_user
):
    fresh = add_image(cats, seed=5)
    response = client_for(annotator_user).get(f"/api/images/{fresh.pk}/embedding/data/")
    assert response.status_code == 404
    assert response.json()["code"] == "embedding_not_ready"
    assert client_for(outsider_user).get(f"/api/images/{fresh.pk}/embedding/").status_code == 404


# --- the ONNX decoder -----------------------------------------------------------------------------


def test_the_onnx_decoder_is_served_with_its_sha256_as_etag(version, golden_onnx, annotator_user):
    client = client_for(annotator_user)
    response = client.get(f"/api/model-versions/{version.pk}/onnx/")
    assert response.status_code == 200
    assert response.content == golden_onnx
    digest = hashlib.sha256(golden_onnx).hexdigest()
    assert response["ETag"] == f'"{digest}"'
    assert "max-age=31536000" in response["Cache-Control"]
    again = client.get(f"/api/model-versions/{version.pk}/onnx/", HTTP_IF_NONE_MATCH=f'"{digest}"')
    assert again.status_code == 304


def test_the_onnx_decoder_is_404_for_outsiders_and_versions_without_one(
    cats, version, annotator_user, outsider_user, second_checkpoint
):
    plain = register(cats, second_checkpoint)
    missing = client_for(annotator_user).get(f"/api/model-versions/{plain.pk}/onnx/")
    outsider = client_for(outsider_user).get(f"/api/model-versions/{version.pk}/onnx/")
    assert (missing.status_code, missing.json()["code"]) == (404, "onnx_not_available")
    assert outsider.status_code == 404


def test_the_served_onnx_and_embedding_give_the_masks_of_the_decode_endpoint(
    image, version, annotator_user
):
    """What the browser does (onnxruntime on the downloaded files) against /decode/."""
    client = client_for(annotator_user)
    status = client.get(f"/api/images/{image.pk}/embedding/").json()
    session = ort.InferenceSession(
        client.get(status["model_version"]["onnx_url"]).content, providers=["CPUExecutionProvider"]
    )
    embedding = np.frombuffer(client.get(status["embedding_url"]).content, dtype="<f4")
    height, width = status["original_size"]
    input_h, input_w = status["input_size"]
    point = [150.0, 70.0]
    coords = np.array([[[point[0] * input_w / width, point[1] * input_h / height], [0, 0]]])
    masks, iou, _ = session.run(
        list(OUTPUT_NAMES),
        {
            "image_embeddings": embedding.reshape(status["shape"]),
            "point_coords": coords.astype(np.float32),
            "point_labels": np.array([[1, -1]], dtype=np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([height, width], np.float32),
        },
    )
    served = post_decode(client, image.pk, {"points": [point], "labels": [1]}).json()
    for index, candidate in enumerate(served["masks"], start=1):  # tokens 1-3: multimask
        differing = (rle_pixels(candidate["rle"]) != (masks[0, index] > 0)).mean()
        assert differing <= 1e-3
        assert abs(candidate["score"] - float(iou[0, index])) < 1e-4


def test_the_schema_documents_the_tool_endpoints(admin_user):
    schema = client_for(admin_user).get("/api/schema/?format=json").json()
    operations = {
        operation["operationId"]
        for path in schema["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    assert {
        "images_decode",
        "embeddings_status",
        "embeddings_data",
        "model_versions_onnx",
    } <= operations
    decode = schema["paths"]["/api/images/{image_id}/decode/"]["post"]
    assert {"200", "400", "404", "409"} <= set(decode["responses"])


def test_model_version_rows_keep_their_onnx_key(version):
    assert ModelVersion.objects.get(pk=version.pk).onnx_decoder_key.startswith("onnx/")
