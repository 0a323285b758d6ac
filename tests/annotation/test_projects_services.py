"""Project and membership services: creation, roles, and the project's last admin."""

import pytest
from django.contrib.auth.models import User

from annotation.errors import ConflictError, DomainError
from annotation.models import Membership, Project, Stage
from annotation.services.projects import (
    membership_remove,
    membership_set,
    project_create,
    project_update,
)

pytestmark = pytest.mark.django_db


def role_of(project: Project, user: User) -> str | None:
    return (
        Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    )


def test_project_create_makes_the_creator_its_admin(admin_user):
    project = project_create(name="  Streets  ", description="city scenes", creator=admin_user)
    project.refresh_from_db()
    assert (project.name, project.description, project.stage) == (
        "Streets",
        "city scenes",
        Stage.ASSISTED_MANUAL,
    )
    assert role_of(project, admin_user) == "admin"


def test_project_create_without_creator_has_no_members():
    project = project_create(name="empty", stage=Stage.FULLY_AUTOMATIC)
    assert project.stage == "fully_automatic"
    assert Membership.objects.filter(project=project).count() == 0


def test_duplicate_project_name_is_a_conflict_and_creates_nothing(admin_user):
    project_create(name="dup")
    with pytest.raises(ConflictError, match="'dup' already exists"):
        project_create(name="dup", creator=admin_user)
    assert Project.objects.filter(name="dup").count() == 1
    assert Membership.objects.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "   "}, "needs a name"),
        ({"name": "x" * 201}, "the limit is 200"),
        ({"name": "ok", "stage": "weekly"}, "unknown stage 'weekly'"),
    ],
)
def test_invalid_project_input_is_refused_and_creates_nothing(kwargs, message):
    with pytest.raises(DomainError, match=message):
        project_create(**kwargs)
    assert Project.objects.count() == 0


def test_project_update_renames_and_changes_the_description(admin_user):
    project = project_create(name="cats", description="old", creator=admin_user)
    returned = project_update(project=project, name="  felines ", description=" new words ")
    project.refresh_from_db()
    assert (project.name, project.description) == ("felines", "new words")
    assert (returned.name, returned.description) == ("felines", "new words")


def test_project_update_leaves_fields_not_given_as_they_are():
    project = project_create(name="cats", description="cat photos")
    project_update(project=project, description="")
    project.refresh_from_db()
    assert (project.name, project.description) == ("cats", "")


def test_project_update_may_keep_the_project_s_own_name():
    project = project_create(name="cats", description="old")
    project_update(project=project, name="cats", description="new")
    project.refresh_from_db()
    assert (project.name, project.description) == ("cats", "new")


def test_renaming_to_another_project_s_name_is_a_conflict_and_saves_nothing():
    project_create(name="dogs")
    project = project_create(name="cats", description="old")
    with pytest.raises(ConflictError, match="'dogs' already exists"):
        project_update(project=project, name="dogs", description="new")
    project.refresh_from_db()
    assert (project.name, project.description) == ("cats", "old")
    assert Project.objects.filter(name="dogs").count() == 1


@pytest.mark.parametrize(
    ("name", "message"), [("   ", "needs a name"), ("x" * 201, "the limit is 200")]
)
def test_invalid_new_name_is_refused_and_saves_nothing(name, message):
    project = project_create(name="cats", description="old")
    with pytest.raises(DomainError, match=message):
        project_update(project=project, name=name, description="new")
    project.refresh_from_db()
    assert (project.name, project.description) == ("cats", "old")


@pytest.fixture
def project(admin_user) -> Project:
    return project_create(name="p", creator=admin_user)


def test_membership_set_adds_a_member_with_the_role(project, annotator_user):
    membership = membership_set(project=project, user=annotator_user, role="annotator")
    assert membership.pk is not None
    assert role_of(project, annotator_user) == "annotator"


def test_membership_set_changes_an_existing_role(project, annotator_user):
    membership_set(project=project, user=annotator_user, role="annotator")
    membership_set(project=project, user=annotator_user, role="reviewer")
    assert role_of(project, annotator_user) == "reviewer"
    assert Membership.objects.filter(project=project, user=annotator_user).count() == 1


def test_membership_set_refuses_an_unknown_role(project, annotator_user):
    with pytest.raises(DomainError, match="unknown role 'owner'"):
        membership_set(project=project, user=annotator_user, role="owner")
    assert role_of(project, annotator_user) is None


def test_demoting_the_last_admin_is_refused(project, admin_user):
    with pytest.raises(DomainError, match="last admin"):
        membership_set(project=project, user=admin_user, role="annotator")
    assert role_of(project, admin_user) == "admin"


def test_an_admin_can_be_demoted_while_another_admin_remains(project, admin_user, annotator_user):
    membership_set(project=project, user=annotator_user, role="admin")
    membership_set(project=project, user=admin_user, role="reviewer")
    assert role_of(project, admin_user) == "reviewer"


def test_membership_remove_deletes_the_membership(project, annotator_user):
    membership_set(project=project, user=annotator_user, role="annotator")
    membership_remove(project=project, user=annotator_user)
    assert role_of(project, annotator_user) is None


def test_removing_the_last_admin_is_refused(project, admin_user):
    with pytest.raises(DomainError, match="alice is the last admin of 'p'"):
        membership_remove(project=project, user=admin_user)
    assert role_of(project, admin_user) == "admin"


def test_an_admin_can_leave_while_another_admin_remains(project, admin_user, annotator_user):
    membership_set(project=project, user=annotator_user, role="admin")
    membership_remove(project=project, user=admin_user)
    assert role_of(project, admin_user) is None
    assert role_of(project, annotator_user) == "admin"


def test_removing_a_non_member_is_refused(project, outsider_user):
    with pytest.raises(DomainError, match="eve is not a member of 'p'"):
        membership_remove(project=project, user=outsider_user)
    assert Membership.objects.filter(project=project).count() == 1


def test_last_admin_rule_is_per_project(project, admin_user, annotator_user):
    other = project_create(name="other", creator=annotator_user)
    membership_set(project=other, user=admin_user, role="admin")
    with pytest.raises(DomainError, match="last admin"):
        membership_remove(project=project, user=admin_user)
    membership_remove(project=other, user=admin_user)
    assert role_of(other, admin_user) is None
