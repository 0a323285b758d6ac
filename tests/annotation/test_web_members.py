"""The project page's member forms: an admin adds a member by username, changes a role, removes
a member; the last admin stays; unknown users and non-admins change nothing."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from annotation.models import Membership, Project

pytestmark = pytest.mark.django_db


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def role_of(project: Project, username: str) -> str | None:
    found = Membership.objects.filter(project=project, user__username=username).first()
    return None if found is None else found.role


def page_text(client: Client, project: Project, **data: str) -> str:
    return client.post(f"/projects/{project.pk}/members/", data, follow=True).content.decode()


def test_admins_see_the_forms_and_others_do_not(project, admin_user, annotator_user):
    html = logged_in(admin_user).get(f"/projects/{project.pk}/").content.decode()
    assert 'id="member-add"' in html
    assert "data-member-remove" in html
    html = logged_in(annotator_user).get(f"/projects/{project.pk}/").content.decode()
    assert "member-add" not in html
    assert "data-member-remove" not in html


def test_an_admin_adds_a_member_and_changes_a_role(project, admin_user, outsider_user):
    client = logged_in(admin_user)
    text = page_text(client, project, username="eve", role="reviewer")
    assert "eve is now a member, as reviewer." in text
    assert role_of(project, "eve") == "reviewer"
    text = page_text(client, project, username="bob", role="admin")
    assert "bob is now admin." in text
    assert role_of(project, "bob") == "admin"


def test_unknown_users_and_roles_change_nothing(project, admin_user):
    client = logged_in(admin_user)
    assert "No active user is named &#x27;nobody&#x27;" in page_text(
        client, project, username="nobody", role="annotator"
    )
    User.objects.create_user("gone", is_active=False)
    assert "No active user" in page_text(client, project, username="gone", role="annotator")
    assert "unknown role" in page_text(client, project, username="bob", role="owner")
    assert role_of(project, "bob") == "annotator"
    assert Membership.objects.filter(project=project).count() == 2


def test_the_last_admin_is_kept(project, admin_user):
    client = logged_in(admin_user)
    assert "last admin" in page_text(client, project, username="alice", role="annotator")
    answer = client.post(
        f"/projects/{project.pk}/members/remove/", {"user_id": str(admin_user.pk)}, follow=True
    )
    assert "last admin" in answer.content.decode()
    assert role_of(project, "alice") == "admin"


def test_an_admin_removes_a_member(project, admin_user, annotator_user):
    client = logged_in(admin_user)
    url = f"/projects/{project.pk}/members/remove/"
    answer = client.post(url, {"user_id": str(annotator_user.pk)}, follow=True)
    assert "bob is no longer a member." in answer.content.decode()
    assert role_of(project, "bob") is None
    answer = client.post(url, {"user_id": "x"}, follow=True)
    assert "not a member" in answer.content.decode()


def test_non_admins_are_refused(project, annotator_user):
    client = logged_in(annotator_user)
    url = f"/projects/{project.pk}/members/"
    assert client.post(url, {"username": "bob", "role": "admin"}).status_code == 403
    remove = f"/projects/{project.pk}/members/remove/"
    assert client.post(remove, {"user_id": str(annotator_user.pk)}).status_code == 403
    assert role_of(project, "bob") == "annotator"
