"""The data-engine dashboard: per-round figures, lineage with deployments, its JSON endpoint,
its page (charts, table, promote / rollback buttons) and the link from the project page."""

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from annotation.models import Mask, Membership, Project
from annotation.services.projects import membership_set
from engine.models import ModelVersion
from engine.services.registry import model_version_deploy
from tests.factories import client_for
from tests.training.promotion_helpers import (
    make_images,
    make_mask,
    make_version,
    round_metrics,
    validation,
)
from training.selectors_dashboard import project_dashboard
from training.services.promotion import version_promote

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewer(project: Project) -> User:
    user = User.objects.create_user("rita", password="rita-pass-123")
    membership_set(project=project, user=user, role=Membership.Role.REVIEWER)
    return user


@pytest.fixture
def engine(project: Project, annotator_user: User, admin_user: User) -> list[ModelVersion]:
    """seed (imported) -> r1 (promoted) -> r2 (not promoted), a side branch r1b of the seed;
    masks made with the seed and with r1."""
    seed = make_version(project)
    model_version_deploy(project=project, version=seed)
    r1 = make_version(
        project, round=1, parent=seed,
        metrics=round_metrics(validation(0.62, 0.8, 7.5), validation(0.41, 0.7, 11.0), 30.0),
    )  # fmt: skip
    r2 = make_version(
        project, round=2, parent=r1,
        metrics=round_metrics(validation(0.7, 0.85, 6.0), validation(0.6, 0.8, 7.5), 42.0),
    )  # fmt: skip
    r1b = make_version(project, round=1, parent=seed, name="branch")
    version_promote(version=r1, user=admin_user, reason="r1 wins")
    a, b, c = make_images(project, 3)
    make_mask(a, version=seed, annotator=annotator_user, seconds=10.0, clicks=4)
    make_mask(a, version=seed, annotator=annotator_user, seconds=20.0, clicks=6)
    make_mask(b, version=seed, annotator=annotator_user, seconds=30.0, clicks=8)
    make_mask(c, version=r1, annotator=annotator_user, seconds=6.0, clicks=2)
    make_mask(c, version=r1, annotator=annotator_user, seconds=4.0, clicks=3, status="rejected")
    # Not counted: no annotator (imported), proposed (not accepted yet), manual (no version).
    make_mask(c, version=r1, annotator=None, seconds=99.0, clicks=99)
    make_mask(c, version=r1, annotator=annotator_user, seconds=99.0, clicks=99, status="proposed")
    make_mask(c, version=None, annotator=annotator_user, seconds=99.0, clicks=99)
    return [seed, r1, r2, r1b]


def test_per_round_figures(project, engine):
    seed, r1, r2, r1b = engine
    project.refresh_from_db()
    rounds = {row["version_id"]: row for row in project_dashboard(project=project)["rounds"]}
    assert [row["round"] for row in project_dashboard(project=project)["rounds"]] == [0, 1, 1, 2]

    s = rounds[seed.pk]
    assert (s["masks"], s["images"], s["masks_per_image"]) == (3, 2, 1.5)
    assert s["seconds_per_mask"] == pytest.approx(20.0)
    assert s["clicks_per_mask"] == pytest.approx(6.0)
    # The seed was evaluated as round 1's parent, on the same split.
    assert (s["miou_1"], s["miou_3"], s["clicks_to_target"]) == (0.41, 0.7, 11.0)
    assert s["metrics_from_round"] == 1
    assert s["training_seconds"] is None
    assert s["label"] == f"r0 · v{seed.pk}"

    one = rounds[r1.pk]
    assert (one["masks"], one["images"], one["masks_per_image"]) == (2, 1, 2.0)
    assert one["seconds_per_mask"] == pytest.approx(5.0)
    assert one["clicks_per_mask"] == pytest.approx(2.5)
    assert (one["miou_1"], one["miou_3"], one["clicks_to_target"]) == (0.62, 0.8, 7.5)
    assert (one["training_seconds"], one["is_deployed"]) == (30.0, True)

    two = rounds[r2.pk]
    assert (two["masks"], two["masks_per_image"], two["seconds_per_mask"]) == (0, None, None)
    assert (two["miou_1"], two["training_seconds"], two["is_deployed"]) == (0.7, 42.0, False)
    assert rounds[r1b.pk]["miou_1"] is None


def test_lineage_is_the_parent_tree_with_deployments(project, engine):
    seed, r1, r2, r1b = engine
    project.refresh_from_db()
    dashboard = project_dashboard(project=project)
    tree = [(node["version_id"], node["depth"]) for node in dashboard["lineage"]]
    assert tree == [(seed.pk, 0), (r1.pk, 1), (r2.pk, 2), (r1b.pk, 1)]
    node = {n["version_id"]: n for n in dashboard["lineage"]}
    [deployment] = node[r1.pk]["deployments"]
    assert (deployment["action"], deployment["previous_version_id"]) == ("promote", seed.pk)
    assert (deployment["user"], deployment["reason"]) == ("alice", "r1 wins")
    assert node[r1.pk]["is_deployed"]
    assert not node[seed.pk]["is_deployed"]
    assert dashboard["deployed_version_id"] == r1.pk


def test_the_json_endpoint_is_for_reviewers_and_admins(
    project, engine, reviewer, annotator_client, outsider_user
):
    url = f"/api/projects/{project.pk}/dashboard/"
    response = client_for(reviewer).get(url)
    assert response.status_code == 200
    body = response.json()
    assert [row["version_id"] for row in body["rounds"]][:2] == [engine[0].pk, engine[1].pk]
    assert body["deployed_version_id"] == engine[1].pk
    assert annotator_client.get(url).status_code == 403
    assert client_for(outsider_user).get(url).status_code == 404


def web_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_page_shows_charts_table_and_lineage(project, engine, reviewer):
    seed, r1, r2, _ = engine
    response = web_client(reviewer).get(f"/projects/{project.pk}/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("data-chart") == 6
    assert 'data-series="rounds"' in html
    data = response.context["chart_data"]
    assert [row["version_id"] for row in data["rounds"]][:2] == [seed.pk, r1.pk]
    assert 'id="dashboard-data"' in html
    rows = response.context["rounds_newest_first"]
    assert rows[0]["version_id"] == r2.pk
    assert f'<tr data-version="{r1.pk}" class="is-current">' in html
    assert "0.620" in html  # r1's mIoU@1 in the table
    assert 'id="lineage"' in html
    assert "data-promote" not in html  # reviewers see, admins act
    embedded = html.split('id="dashboard-data" type="application/json">')[1].split("</script>")[0]
    assert json.loads(embedded)["rounds"][1]["miou_1"] == 0.62


def test_the_page_is_not_for_annotators(project, engine, annotator_user):
    assert web_client(annotator_user).get(f"/projects/{project.pk}/dashboard/").status_code == 403


def test_admins_promote_and_roll_back_from_the_page(project, engine, admin_user, reviewer):
    seed, r1, r2, _ = engine
    admin = web_client(admin_user)
    html = admin.get(f"/projects/{project.pk}/dashboard/").content.decode()
    assert f'data-promote="{r2.pk}"' in html
    assert f'data-promote="{r1.pk}"' not in html  # live already
    assert f"Roll back to v{seed.pk}" in html

    url = f"/projects/{project.pk}/dashboard/promote/{r2.pk}/"
    assert web_client(reviewer).post(url).status_code == 403
    response = admin.post(url, follow=True)
    assert f"Version {r2.pk} is live" in response.content.decode()
    project.refresh_from_db()
    assert project.deployed_version_id == r2.pk

    response = admin.post(f"/projects/{project.pk}/dashboard/rollback/", follow=True)
    assert f"version {r1.pk} is live again" in response.content.decode()
    response = admin.post(url.replace(str(r2.pk), str(r1.pk)), follow=True)
    assert "Not promoted" in response.content.decode()  # live already: refused, unchanged
    project.refresh_from_db()
    assert project.deployed_version_id == r1.pk


def test_the_project_page_links_the_dashboard_for_reviewers_only(project, reviewer, annotator_user):
    link = f'href="/projects/{project.pk}/dashboard/"'
    assert link in web_client(reviewer).get(f"/projects/{project.pk}/").content.decode()
    assert link not in web_client(annotator_user).get(f"/projects/{project.pk}/").content.decode()


def test_masks_counted_per_version_ignore_other_projects(project, engine, annotator_user):
    other = Project.objects.create(name="dogs")
    foreign = make_version(other)
    [image] = make_images(other, 1)
    make_mask(image, version=foreign, annotator=annotator_user, seconds=1.0, clicks=1)
    project.refresh_from_db()
    rounds = project_dashboard(project=project)["rounds"]
    assert foreign.pk not in [row["version_id"] for row in rounds]
    assert sum(row["masks"] for row in rounds) == 5
    assert Mask.objects.count() == 9
