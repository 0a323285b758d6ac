"""Images (upload, list, bytes, thumbnails) and masks over the REST API."""

import io
import urllib.request

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PilImage
from pycocotools import mask as mask_utils

from annotation.models import Image, Mask, Project
from annotation.services.ingest import images_ingest_batch
from annotation.services.masks import mask_create
from storage.blobs import get_blob_store
from tests.factories import png

pytestmark = pytest.mark.django_db


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def ingest(project: Project, *datas: bytes) -> list[Image]:
    files = [(f"img{i}.png", data) for i, data in enumerate(datas)]
    return [o.image for o in images_ingest_batch(project=project, files=files) if o.image]


def test_admin_uploads_several_files_in_one_request(project, admin_client):
    response = admin_client.post(
        f"/api/projects/{project.pk}/images/",
        {"files": [upload("a.png", png(1)), upload("b.png", png(2, 64, 48))]},
        format="multipart",
    )
    assert response.status_code == 201
    assert response.data["imported"] == 2
    assert [r["file_name"] for r in response.data["results"]] == ["a.png", "b.png"]
    assert response.data["results"][1]["image"]["width"] == 64
    assert project.images.count() == 2


def test_uploading_the_same_bytes_again_imports_nothing(project, admin_client):
    ingest(project, png(1))
    response = admin_client.post(
        f"/api/projects/{project.pk}/images/", {"files": [upload("again.png", png(1))]}
    )
    assert response.status_code == 200
    assert response.data["duplicates"] == 1
    assert response.data["results"][0]["status"] == "duplicate"
    assert project.images.count() == 1


def test_one_bad_file_rejects_the_whole_upload_with_reasons(project, admin_client):
    response = admin_client.post(
        f"/api/projects/{project.pk}/images/",
        {"files": [upload("good.png", png(1)), upload("notes.png", b"just some text")]},
    )
    assert response.status_code == 400
    assert response.data["error"] == "image_rejected"
    rejected = response.data["details"]["rejected"]
    assert [r["file_name"] for r in rejected] == ["notes.png"]
    assert rejected[0]["reason"]
    assert project.images.count() == 0
    assert list(get_blob_store().list("images/")) == []


def test_an_upload_without_files_is_400(project, admin_client):
    response = admin_client.post(f"/api/projects/{project.pk}/images/", {}, format="multipart")
    assert response.status_code == 400
    assert "files" in response.data


def test_images_are_listed_in_pages(project, annotator_client):
    images = ingest(project, png(1), png(2), png(3))
    response = annotator_client.get(f"/api/projects/{project.pk}/images/?limit=2&offset=1")
    assert response.status_code == 200
    assert response.data["count"] == 3
    assert [row["id"] for row in response.data["results"]] == [images[1].pk, images[2].pk]
    assert response.data["results"][0]["thumbnail_url"] == f"/api/images/{images[1].pk}/thumbnail/"


def test_an_image_is_retrieved_with_its_facts(project, annotator_client):
    (image,) = ingest(project, png(5, 50, 20))
    response = annotator_client.get(f"/api/images/{image.pk}/")
    assert response.status_code == 200
    assert (response.data["width"], response.data["height"]) == (50, 20)
    assert response.data["format"] == "PNG"
    assert response.data["sha256"] == image.sha256


def test_content_streams_the_original_bytes(project, annotator_client):
    data = png(7)
    (image,) = ingest(project, data)
    response = annotator_client.get(f"/api/images/{image.pk}/content/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == data


def test_content_answers_304_when_the_client_has_it(project, annotator_client):
    (image,) = ingest(project, png(7))
    response = annotator_client.get(
        f"/api/images/{image.pk}/content/", HTTP_IF_NONE_MATCH=f'"{image.sha256}"'
    )
    assert response.status_code == 304


def test_content_redirects_to_a_presigned_url_on_s3(project, annotator_client, s3_settings):
    data = png(9)
    (image,) = ingest(project, data)
    response = annotator_client.get(f"/api/images/{image.pk}/content/")
    assert response.status_code == 302
    with urllib.request.urlopen(response["Location"], timeout=10) as fetched:
        assert fetched.read() == data


def named(project: Project, name: str, data: bytes) -> Image:
    (outcome,) = images_ingest_batch(project=project, files=[(name, data)])
    assert outcome.image is not None
    return outcome.image


def test_content_is_offered_under_a_name_whose_extension_is_its_format(project, annotator_client):
    """A PNG uploaded as ``poly.html`` (bytes after the image end are kept) must not be saved as
    an HTML file: the format's extension is added to the offered name."""
    image = named(project, "poly.html", png(11) + b"<html><script>alert(1)</script></html>")
    response = annotator_client.get(f"/api/images/{image.pk}/content/")
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"] == 'inline; filename="poly.html.png"'
    kept = named(project, "Cat.PNG", png(12))
    response = annotator_client.get(f"/api/images/{kept.pk}/content/")
    assert response["Content-Disposition"] == 'inline; filename="Cat.PNG"'


def test_the_presigned_url_names_the_download_with_the_formats_extension(
    project, annotator_client, s3_settings
):
    image = named(project, "poly.html", png(13))
    response = annotator_client.get(f"/api/images/{image.pk}/content/")
    with urllib.request.urlopen(response["Location"], timeout=10) as fetched:
        assert 'filename="poly.html.png"' in fetched.headers["Content-Disposition"]


def test_thumbnail_is_a_small_jpeg(project, annotator_client):
    (image,) = ingest(project, png(3, 600, 300))
    response = annotator_client.get(f"/api/images/{image.pk}/thumbnail/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    thumb = PilImage.open(io.BytesIO(response.content))
    assert thumb.format == "JPEG"
    assert thumb.size == (256, 128)


def square(height: int, width: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_masks_are_listed_per_project_with_filters(project, annotator_client, admin_user):
    first, second = ingest(project, png(1), png(2))
    kept = mask_create(image=first, binary=square(30, 40, 2, 3, 10), source="manual")
    mask_create(image=second, binary=square(30, 40, 5, 5, 4), source="automatic")
    mask_create(image=first, binary=square(30, 40, 0, 0, 3), source="manual", status="rejected")
    url = f"/api/projects/{project.pk}/masks/"
    everything = annotator_client.get(url)
    assert everything.data["count"] == 3
    filtered = annotator_client.get(url, {"status": "accepted", "source": "manual"})
    assert [m["id"] for m in filtered.data["results"]] == [kept.pk]
    row = filtered.data["results"][0]
    assert row["bbox"] == [3, 2, 10, 10]
    assert row["area"] == 100
    decoded = mask_utils.decode(
        {"size": row["segmentation"]["size"], "counts": row["segmentation"]["counts"]}
    )
    assert np.array_equal(decoded.astype(bool), square(30, 40, 2, 3, 10))
    by_image = annotator_client.get(url, {"image": second.pk})
    assert by_image.data["count"] == 1


def test_masks_of_one_image_are_listed(project, annotator_client):
    first, second = ingest(project, png(1), png(2))
    mask_create(image=first, binary=square(30, 40, 2, 3, 10), source="manual")
    other = mask_create(image=second, binary=square(30, 40, 1, 1, 5), source="manual")
    response = annotator_client.get(f"/api/images/{second.pk}/masks/")
    assert response.status_code == 200
    assert [m["id"] for m in response.data["results"]] == [other.pk]
    assert Mask.objects.count() == 2


def test_an_unknown_mask_filter_value_is_400(project, annotator_client):
    response = annotator_client.get(f"/api/projects/{project.pk}/masks/", {"status": "maybe"})
    assert response.status_code == 400
    assert "status" in response.data
