"""Ids beyond the id columns' range (2**63 - 1) in every place the API takes one: 400 `invalid`
naming the field in bodies and query parameters, 404 in paths; never a database error.

On PostgreSQL such a value is merely compared; SQLite's driver (the `make run` default) raises
OverflowError, so each call is made on both, the whole request routed to SQLite for the second.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from rest_framework.test import APIClient

from annotation.models import Image, Membership, Project, Stage
from annotation.selectors.raw_rows import RawRowQuery
from engine.models import ModelVersion
from engine.services import serving
from tests.factories import client_for

VENDORS = ["default", "sqlite"]
TOO_BIG = 2**63  # one past the largest id
HUGE = 99_999_999_999_999_999_999


class AllOnSqlite:
    """Sends every ORM read and write to the "sqlite" test database."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "sqlite"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "sqlite"

    def allow_relation(self, *objects: Any, **hints: Any) -> bool:
        return True


@dataclass
class World:
    client: APIClient
    project: Project
    image: Image


@pytest.fixture(params=VENDORS)
def world(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """alice, admin of "cats" (semi-automatic, a deployed version, one image), on the vendor."""
    using = request.param
    router = [] if using == "default" else [f"{__name__}.AllOnSqlite"]
    query = serving._DECODE_IMAGE
    monkeypatch.setattr(serving, "_DECODE_IMAGE", RawRowQuery(query.parts, query.tail, using))
    with override_settings(DATABASE_ROUTERS=router):
        alice = User.objects.create_user("alice")
        project = Project.objects.create(name="cats", stage=Stage.SEMI_AUTOMATIC)
        Membership.objects.create(user=alice, project=project, role="admin")
        version = ModelVersion.objects.create(
            project=project, arch="vit_tiny", config={"image_size": 1024}, sha256="a" * 64
        )
        project.deployed_version = version
        project.save()
        image = Image.objects.create(
            project=project, blob_key="k", sha256="b" * 64, width=40, height=30, byte_size=1
        )
        yield World(client_for(alice), project, image)


# (method, path, body or query): {p} the project, {i} the image; BIG the out-of-range id.
BAD_FIELDS = [
    ("post", "/api/projects/{p}/next-image/", {"skip": ["BIG"]}, "skip"),
    ("get", "/api/projects/{p}/masks/", {"image": "BIG"}, "image"),
    ("get", "/api/projects/{p}/masks/", {"annotator": "BIG"}, "annotator"),
    ("get", "/api/images/{i}/masks/", {"annotator": "BIG"}, "annotator"),
    ("get", "/api/projects/{p}/review/", {"annotator": "BIG"}, "annotator"),
    ("post", "/api/projects/{p}/embeddings/requests/", {"image_ids": ["BIG"]}, "image_ids"),
    ("post", "/api/projects/{p}/embeddings/requests/",
     {"image_ids": ["{i}"], "model_version": "BIG"}, "model_version"),
    ("post", "/api/projects/{p}/embeddings/precompute/", {"model_version": "BIG"},
     "model_version"),
    ("get", "/api/images/{i}/embedding/", {"model_version": "BIG"}, "model_version"),
    ("post", "/api/projects/{p}/automatic-runs/", {"image_ids": ["BIG"]}, "image_ids"),
    ("post", "/api/projects/{p}/prefill/", {"image_ids": ["BIG"]}, "image_ids"),
    ("post", "/api/projects/{p}/exports/", {"format": "coco", "job": "BIG"}, "job"),
    ("post", "/api/images/{i}/masks/",
     {"rle": {"size": [30, 40], "counts": [0, 1200]}, "source": "manual",
      "model_version": "BIG"}, "model_version"),
    ("post", "/api/projects/{p}/rounds/", {"parent_version": "BIG"}, "parent_version"),
    ("post", "/api/images/{i}/decode/",
     {"model_version": "BIG", "points": [[1, 1]], "labels": [1]}, "model_version"),
]  # fmt: skip

BAD_PATHS = [
    ("delete", "/api/projects/{p}/members/BIG/", "no such member"),
    ("get", "/api/projects/{p}/annotators/BIG/stats/", "no such annotator in this project"),
    ("post", "/api/images/BIG/decode/", "no such image"),
    ("get", "/api/images/BIG/", "no such image"),
]


def _fill(value: Any, world: World, big: int) -> Any:
    if isinstance(value, dict):
        return {key: _fill(item, world, big) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, world, big) for item in value]
    if value == "BIG":
        return big
    if value == "{i}":
        return world.image.pk
    return value


def _url(path: str, world: World, big: int) -> str:
    return path.format(p=world.project.pk, i=world.image.pk).replace("BIG", str(big))


@pytest.mark.django_db(databases=VENDORS)
@pytest.mark.parametrize("big", [TOO_BIG, HUGE])
@pytest.mark.parametrize(("method", "path", "data", "field"), BAD_FIELDS)
def test_ids_out_of_range_in_bodies_and_queries_answer_400_naming_the_field(
    world, big, method, path, data, field
):
    url, payload = _url(path, world, big), _fill(data, world, big)
    call = getattr(world.client, method)
    response = call(url, payload, format="json") if method == "post" else call(url, payload)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert field in body
    assert "9223372036854775807" in str(body[field])


@pytest.mark.django_db(databases=VENDORS)
@pytest.mark.parametrize("big", [TOO_BIG, HUGE])
@pytest.mark.parametrize(("method", "path", "detail"), BAD_PATHS)
def test_ids_out_of_range_in_paths_answer_404_like_a_missing_row(world, big, method, path, detail):
    response = getattr(world.client, method)(_url(path, world, big))
    assert response.status_code == 404, response.content
    assert response.json() == {"detail": detail, "code": "not_found"}


@pytest.mark.django_db(databases=VENDORS)
def test_the_largest_id_is_still_an_id(world):
    largest = 2**63 - 1
    masks = world.client.get(f"/api/projects/{world.project.pk}/masks/", {"image": largest})
    assert (masks.status_code, masks.json()["count"]) == (200, 0)
    response = world.client.delete(f"/api/projects/{world.project.pk}/members/{largest}/")
    assert response.status_code == 404


@pytest.mark.django_db(databases=VENDORS)
@pytest.mark.parametrize("big", [TOO_BIG, HUGE])
@pytest.mark.parametrize(
    ("page", "parameter", "context_key"),
    [("review", "annotator", "annotator_id"), ("annotate", "image", "image_id")],
)
def test_web_pages_ignore_an_id_beyond_the_range(world, big, page, parameter, context_key):
    """The review page's ``?annotator=`` and the tool's ``?image=`` are optional narrowings:
    a value that cannot be an id is ignored like any other bad value (it crashed the review
    page on SQLite)."""
    browser = Client()
    browser.force_login(User.objects.get(username="alice"))
    response = browser.get(f"/projects/{world.project.pk}/{page}/", {parameter: str(big)})
    assert response.status_code == 200
    assert response.context[context_key] is None
