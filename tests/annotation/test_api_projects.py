"""Projects, members, tokens and model versions over the REST API."""

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.response import Response
from rest_framework.test import APIClient

from annotation.models import Membership, Project
from annotation.services.projects import project_create
from engine.models import ModelVersion
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def test_member_lists_only_their_projects_with_role_and_counts(project, annotator_user):
    project_create(name="dogs")
    response = client_for(annotator_user).get("/api/projects/")
    assert response.status_code == 200
    assert response.data["count"] == 1
    row = response.data["results"][0]
    assert row["name"] == "cats"
    assert row["my_role"] == "annotator"
    assert row["image_count"] == 0
    assert row["accepted_mask_count"] == 0


def test_superuser_lists_every_project_as_admin(project):
    root = User.objects.create_superuser("root", password="root-pass-123")
    project_create(name="dogs")
    response = client_for(root).get("/api/projects/")
    assert [row["name"] for row in response.data["results"]] == ["cats", "dogs"]
    assert {row["my_role"] for row in response.data["results"]} == {"admin"}


def test_staff_user_creates_a_project_and_becomes_its_admin():
    staff = User.objects.create_user("sam", password="sam-pass-123", is_staff=True)
    response = client_for(staff).post(
        "/api/projects/", {"name": "birds", "stage": "semi_automatic"}, format="json"
    )
    assert response.status_code == 201
    project = Project.objects.get(name="birds")
    assert response.data["id"] == project.pk
    assert response.data["stage"] == "semi_automatic"
    assert response.data["my_role"] == "admin"
    assert Membership.objects.get(project=project, user=staff).role == "admin"


def test_plain_user_may_not_create_a_project(annotator_user):
    response = client_for(annotator_user).post("/api/projects/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert not Project.objects.filter(name="x").exists()


def test_duplicate_project_name_answers_409_with_the_error_code(project):
    staff = User.objects.create_user("sam", password="sam-pass-123", is_staff=True)
    response = client_for(staff).post("/api/projects/", {"name": "cats"}, format="json")
    assert response.status_code == 409
    assert response.data["error"] == "conflict"
    assert "cats" in response.data["detail"]
    assert Project.objects.filter(name="cats").count() == 1


def test_unknown_stage_is_rejected_and_creates_nothing():
    staff = User.objects.create_user("sam", password="sam-pass-123", is_staff=True)
    response = client_for(staff).post(
        "/api/projects/", {"name": "birds", "stage": "warp_speed"}, format="json"
    )
    assert response.status_code == 400
    assert "stage" in response.data
    assert not Project.objects.exists()


def test_member_retrieves_a_project(project, annotator_user):
    response = client_for(annotator_user).get(f"/api/projects/{project.pk}/")
    assert response.status_code == 200
    assert response.data["description"] == "cat photos"
    assert response.data["deployed_version"] is None


def patch_project(user: User, project: Project, body: dict[str, str]) -> Response:
    return client_for(user).patch(f"/api/projects/{project.pk}/", body, format="json")


def test_admin_renames_a_project_and_gets_it_back_with_its_counts(project, admin_user):
    response = patch_project(admin_user, project, {"name": "felines"})
    assert response.status_code == 200
    assert (response.data["id"], response.data["name"]) == (project.pk, "felines")
    assert response.data["description"] == "cat photos"
    assert response.data["my_role"] == "admin"
    assert response.data["image_count"] == 0
    project.refresh_from_db()
    assert (project.name, project.description) == ("felines", "cat photos")


def test_admin_changes_only_the_description(project, admin_user):
    response = patch_project(admin_user, project, {"description": "cats and kittens"})
    assert response.status_code == 200
    project.refresh_from_db()
    assert (project.name, project.description) == ("cats", "cats and kittens")


def test_annotator_may_not_update_a_project(project, annotator_user):
    response = patch_project(annotator_user, project, {"name": "mine"})
    assert response.status_code == 403
    project.refresh_from_db()
    assert project.name == "cats"


def test_renaming_to_a_taken_name_answers_409_and_saves_nothing(project, admin_user):
    project_create(name="dogs")
    response = patch_project(admin_user, project, {"name": "dogs", "description": "x"})
    assert response.status_code == 409
    assert response.data["error"] == "conflict"
    project.refresh_from_db()
    assert (project.name, project.description) == ("cats", "cat photos")


@pytest.mark.parametrize("name", ["", "x" * 201])
def test_a_blank_or_too_long_new_name_answers_400_and_saves_nothing(project, admin_user, name):
    response = patch_project(admin_user, project, {"name": name})
    assert response.status_code == 400
    assert "name" in response.data
    project.refresh_from_db()
    assert project.name == "cats"


def test_members_are_listed_with_roles(project, annotator_user):
    response = client_for(annotator_user).get(f"/api/projects/{project.pk}/members/")
    assert response.status_code == 200
    assert [(m["username"], m["role"]) for m in response.data["results"]] == [
        ("alice", "admin"),
        ("bob", "annotator"),
    ]


def test_admin_adds_a_member_then_changes_the_role(project, admin_user, outsider_user):
    client = client_for(admin_user)
    url = f"/api/projects/{project.pk}/members/"
    added = client.post(url, {"username": "eve", "role": "annotator"}, format="json")
    assert added.status_code == 200
    assert added.data["user_id"] == outsider_user.pk
    changed = client.post(url, {"username": "eve", "role": "reviewer"}, format="json")
    assert changed.data["role"] == "reviewer"
    assert Membership.objects.get(project=project, user=outsider_user).role == "reviewer"


def test_adding_an_unknown_user_is_400(project, admin_user):
    response = client_for(admin_user).post(
        f"/api/projects/{project.pk}/members/", {"username": "nobody", "role": "admin"}
    )
    assert response.status_code == 400
    assert "username" in response.data
    assert project.memberships.count() == 2


def test_admin_removes_a_member(project, admin_user, annotator_user):
    response = client_for(admin_user).delete(
        f"/api/projects/{project.pk}/members/{annotator_user.pk}/"
    )
    assert response.status_code == 204
    assert not Membership.objects.filter(project=project, user=annotator_user).exists()


def test_removing_the_last_admin_is_refused_with_a_domain_error(project, admin_user):
    response = client_for(admin_user).delete(f"/api/projects/{project.pk}/members/{admin_user.pk}/")
    assert response.status_code == 400
    assert response.data["error"] == "invalid"
    assert "last admin" in response.data["detail"]
    assert Membership.objects.filter(project=project, user=admin_user, role="admin").exists()


def test_removing_a_user_who_is_not_a_member_is_404(project, admin_user, outsider_user):
    response = client_for(admin_user).delete(
        f"/api/projects/{project.pk}/members/{outsider_user.pk}/"
    )
    assert response.status_code == 404


def test_a_token_obtained_with_the_password_authenticates_api_calls(project, annotator_user):
    anonymous = APIClient()
    response = anonymous.post(
        "/api/auth/token/", {"username": "bob", "password": "bob-pass-123"}, format="json"
    )
    assert response.status_code == 200
    assert response.data["token"] == Token.objects.get(user=annotator_user).key
    anonymous.credentials(HTTP_AUTHORIZATION=f"Token {response.data['token']}")
    assert anonymous.get("/api/projects/").data["count"] == 1


def test_a_wrong_password_gets_no_token(annotator_user):
    response = APIClient().post(
        "/api/auth/token/", {"username": "bob", "password": "wrong"}, format="json"
    )
    assert response.status_code == 400
    assert not Token.objects.exists()


def test_model_versions_are_listed_and_the_deployed_one_is_marked(project, annotator_user):
    first = ModelVersion.objects.create(
        project=project, name="sam-b", arch="vit_b", checkpoint_key="models/a", sha256="a" * 64
    )
    second = ModelVersion.objects.create(
        project=project,
        name="round 1",
        arch="vit_b",
        checkpoint_key="models/b",
        sha256="b" * 64,
        parent=first,
        round=1,
    )
    project.deployed_version = second
    project.save()
    client = client_for(annotator_user)
    listed = client.get(f"/api/projects/{project.pk}/model-versions/")
    assert [(v["id"], v["is_deployed"]) for v in listed.data["results"]] == [
        (second.pk, True),
        (first.pk, False),
    ]
    detail = client.get(f"/api/model-versions/{second.pk}/")
    assert detail.status_code == 200
    assert detail.data["parent"] == first.pk
    assert client.get(f"/api/projects/{project.pk}/").data["deployed_version"]["id"] == second.pk
