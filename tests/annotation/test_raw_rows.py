"""Hand-written SQL on the click path (annotation.selectors.raw_rows): token authentication and
the decode's image query give what the ORM gives, on PostgreSQL and on SQLite."""

import datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.http import Http404
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation import authentication
from annotation.models import Image, Membership, Project
from annotation.selectors.raw_rows import Columns, RawRowQuery
from engine.models import ModelVersion
from engine.services import serving

VENDORS = ["default", "sqlite"]  # PostgreSQL (the tests' database) and SQLite (make run)


def _on(query: RawRowQuery, using: str) -> RawRowQuery:
    return RawRowQuery(query.parts, query.tail, using=using)


def _world(using: str) -> dict[str, Any]:
    """A user with a token, a member and a superuser; a project with a deployed version and
    an image, created on database ``using``."""
    users = {
        name: User.objects.db_manager(using).create_user(name, email=f"{name}@example.org")
        for name in ("bob", "eve")
    }
    root = User.objects.db_manager(using).create_superuser("root", email="root@example.org")
    project = Project.objects.using(using).create(name="cats")
    version = ModelVersion.objects.using(using).create(
        project=project, arch="vit_tiny", config={"image_size": 1024}, sha256="a" * 64
    )
    project.deployed_version = version
    project.save(using=using)
    Membership.objects.using(using).create(user=users["bob"], project=project, role="reviewer")
    image = Image.objects.using(using).create(
        project=project, blob_key="k", sha256="b" * 64, width=30, height=20, byte_size=1
    )
    token = Token.objects.using(using).create(user=users["bob"])
    return {**users, "root": root, "project": project, "version": version, "image": image,
            "token": token}  # fmt: skip


def test_a_field_whose_value_needs_a_converter_is_refused() -> None:
    for name in ("date_joined", "last_login"):  # datetimes: strings on SQLite
        with pytest.raises(TypeError, match="needs a database converter"):
            Columns(User, "u", ("id", name)).select(str)
    with pytest.raises(TypeError, match="needs a database converter"):  # JSON
        Columns(ModelVersion, "v", ("id", "config")).select(str)
    with pytest.raises(TypeError, match="not a concrete column"):
        Columns(Project, "p", ("id", "memberships")).select(str)


@pytest.mark.django_db(databases=VENDORS)
@pytest.mark.parametrize("using", VENDORS)
def test_the_token_query_gives_the_user_with_the_rest_deferred(using: str) -> None:
    world = _world(using)
    found = _on(authentication._QUERY, using).first([world["token"].key])
    assert found is not None
    token, user = found
    assert (token.pk, token.user_id) == (world["token"].pk, world["bob"].pk)
    assert (user.pk, user.username) == (world["bob"].pk, "bob")
    # Booleans come back as bool on both vendors (SQLite stores 0 / 1).
    assert (user.is_active, user.is_staff, user.is_superuser) == (True, False, False)
    assert type(user.is_active) is bool
    assert user.get_deferred_fields() == {
        "password", "last_login", "first_name", "last_name", "email", "date_joined"
    }  # fmt: skip
    # A deferred field loads on first access, converted as the ORM converts it.
    assert user.email == "bob@example.org"
    assert isinstance(user.date_joined, datetime.datetime)
    assert _on(authentication._QUERY, using).first(["no-such-token"]) is None


@pytest.mark.django_db(databases=VENDORS)
@pytest.mark.parametrize("using", VENDORS)
def test_the_decode_image_query_joins_project_version_and_membership(using: str) -> None:
    world = _world(using)
    query = _on(serving._DECODE_IMAGE, using)
    found = query.first([world["bob"].pk, world["image"].pk])
    assert found is not None
    image, project, deployed, membership = found
    assert (image.pk, image.width, image.height, image.sha256) == (
        world["image"].pk,
        30,
        20,
        "b" * 64,
    )
    assert (project.pk, project.name, project.deployed_version_id) == (
        world["project"].pk,
        "cats",
        world["version"].pk,
    )
    assert (deployed.pk, deployed.status, deployed.sha256) == (
        world["version"].pk,
        "ready",
        "a" * 64,
    )
    assert deployed.config == {"image_size": 1024}  # deferred JSON, loaded on access
    assert membership.role == "reviewer"
    # A user without a membership: the LEFT JOIN gives no membership instance.
    outsider = query.first([world["eve"].pk, world["image"].pk])
    assert outsider is not None
    assert outsider[3] is None
    assert query.first([world["bob"].pk, world["image"].pk + 1000]) is None


@pytest.mark.django_db
def test_decode_image_get_keeps_the_visibility_rules(django_assert_num_queries) -> None:
    world = _world("default")
    with django_assert_num_queries(1):  # image, project, deployed version and role at once
        image = serving.decode_image_get(user=world["bob"], image_id=world["image"].pk)
        version = serving.serving_version(project=image.project, version_id=None)
    assert version == world["version"]
    assert image.project.deployed_version == world["version"]
    # A superuser sees every project (as its admin) without being a member.
    assert serving.decode_image_get(user=world["root"], image_id=world["image"].pk) == image
    with pytest.raises(Http404):  # not a member: the project's existence is not revealed
        serving.decode_image_get(user=world["eve"], image_id=world["image"].pk)
    with pytest.raises(Http404):
        serving.decode_image_get(user=world["bob"], image_id=world["image"].pk + 1000)
    # No deployed version: the project says so (NoDeployedVersion), no stale instance.
    Project.objects.filter(pk=world["project"].pk).update(deployed_version=None)
    image = serving.decode_image_get(user=world["bob"], image_id=world["image"].pk)
    assert image.project.deployed_version is None


@pytest.mark.django_db
def test_token_authentication_keeps_drf_rules_in_one_query(django_assert_num_queries) -> None:
    world = _world("default")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {world['token'].key}")
    authenticator = authentication.TokenAuthentication()
    with django_assert_num_queries(1):
        user, token = authenticator.authenticate_credentials(world["token"].key)
    assert (user, token) == (world["bob"], world["token"])
    assert token.user is user
    assert client.get("/api/projects/").status_code == 200

    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    refused = client.get("/api/projects/")
    # 403 rather than 401: the first authenticator (the session's) sends no WWW-Authenticate.
    assert refused.status_code == 403
    assert "Invalid token" in str(refused.json())

    User.objects.filter(pk=world["bob"].pk).update(is_active=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {world['token'].key}")
    inactive = client.get("/api/projects/")
    assert inactive.status_code == 403
    assert "User inactive or deleted" in str(inactive.json())
