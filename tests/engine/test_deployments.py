"""Every deploy path — the registry API, ``import_checkpoint --deploy``, the Django admin action —
records a Deployment row and queues the new version's embeddings, so rollback has a target and
annotators get embeddings whichever way a version went live."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from annotation.models import Project
from annotation.services.projects import project_create
from engine.models import Deployment, Job
from engine.services.deployments import PromotionRefused, deployment_switch
from tests.engine.conftest import GOLDEN_CHECKPOINT, add_images, register_golden
from tests.factories import client_for
from tests.training.promotion_helpers import make_version
from training.services.promotion import rollback_target, version_rollback

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(admin_user: User, fresh_model_cache: None) -> Project:
    """Project "cats" with alice as its admin (the engine conftest's project has no admin)."""
    return project_create(name="cats", creator=admin_user)


def history(project: Project) -> list[tuple[int, int | None, str]]:
    return [
        (d.version_id, d.previous_version_id, d.action)
        for d in Deployment.objects.filter(project=project).order_by("id")
    ]


def test_an_api_deploy_is_recorded_and_a_repeat_changes_nothing(project, admin_user):
    first, second = make_version(project), make_version(project)
    client = client_for(admin_user)
    assert client.post(f"/api/model-versions/{first.pk}/deploy/").status_code == 200
    assert client.post(f"/api/model-versions/{second.pk}/deploy/").status_code == 200
    again = client.post(f"/api/model-versions/{second.pk}/deploy/")
    assert again.status_code == 200
    assert again.data["is_deployed"] is True
    assert history(project) == [(first.pk, None, "promote"), (second.pk, first.pk, "promote")]
    latest = Deployment.objects.filter(project=project).order_by("id").last()
    assert latest is not None
    assert latest.user == admin_user


def test_rollback_after_api_deploys_goes_back_to_the_previous_version(project, admin_user):
    first, second = make_version(project), make_version(project)
    client = client_for(admin_user)
    client.post(f"/api/model-versions/{first.pk}/deploy/")
    client.post(f"/api/model-versions/{second.pk}/deploy/")
    project.refresh_from_db()
    assert rollback_target(project=project) == first
    assert version_rollback(project=project, user=admin_user) == first
    project.refresh_from_db()
    assert project.deployed_version_id == first.pk


def test_a_deploy_queues_the_versions_embeddings_once_committed(
    project, admin_user, django_capture_on_commit_callbacks
):
    add_images(project, 3)
    version = make_version(project)
    with django_capture_on_commit_callbacks(execute=True):
        deployment_switch(version=version, user=admin_user, reason="test")
    job = Job.objects.get(kind=Job.Kind.EMBED)
    assert (job.params["model_version_id"], job.progress_total) == (version.pk, 3)


def test_switching_to_the_deployed_version_is_refused_unless_told_it_is_a_repeat(project):
    version = make_version(project)
    deployment_switch(version=version, user=None, reason="first")
    with pytest.raises(PromotionRefused, match="deployed in project 'cats' already"):
        deployment_switch(version=version, user=None, reason="again")
    assert deployment_switch(version=version, user=None, reason="again", refuse_same=False)
    assert len(history(project)) == 1


def test_import_checkpoint_with_deploy_records_the_deployment(
    project, django_capture_on_commit_callbacks
):
    add_images(project, 2)
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "import_checkpoint", "cats", str(GOLDEN_CHECKPOINT), "--deploy", stdout=io.StringIO()
        )
    project.refresh_from_db()
    [deployment] = Deployment.objects.filter(project=project)
    assert deployment.version_id == project.deployed_version_id
    assert deployment.reason == "deployed at import"
    assert Job.objects.get(kind=Job.Kind.EMBED).params["model_version_id"] == deployment.version_id
    # the same file imported and deployed again: no second row, nothing else queued
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "import_checkpoint", "cats", str(GOLDEN_CHECKPOINT), "--deploy", stdout=io.StringIO()
        )
    assert Deployment.objects.filter(project=project).count() == 1
    assert Job.objects.filter(kind=Job.Kind.EMBED).count() == 1


def test_the_admin_action_deploy_is_recorded(project, client):
    version = register_golden(project)
    superuser = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(superuser)
    response = client.post(
        "/admin/engine/modelversion/",
        {"action": "deploy", "_selected_action": [str(version.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    project.refresh_from_db()
    assert project.deployed_version_id == version.pk
    [deployment] = Deployment.objects.filter(project=project)
    assert (deployment.user, deployment.reason) == (superuser, "deployed from the Django admin")
