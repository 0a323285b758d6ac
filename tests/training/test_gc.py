"""Embedding GC: which versions are retired, whose embeddings are deleted, and that a second
run changes nothing; the daily task on the default queue."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

from annotation.models import Project
from config.celery import app as celery_app
from engine.models import Job, ModelVersion
from engine.services.embeddings import embedding_key
from engine.services.jobs import job_create
from engine.services.registry import model_version_deploy
from engine.services.serving import ModelVersionGone, serving_version
from storage.blobs import get_blob_store
from tests.factories import REPO
from tests.training.promotion_helpers import make_images, make_version, put_embedding_blobs
from training.housekeeping import embeddings_gc as embeddings_gc_task
from training.services.embedding_gc import embeddings_gc, project_embeddings_gc
from training.services.promotion import version_promote

pytestmark = pytest.mark.django_db


def status_of(*versions: ModelVersion) -> list[str]:
    return [ModelVersion.objects.get(pk=v.pk).status for v in versions]


def stored(keys: list[str]) -> list[bool]:
    store = get_blob_store()
    return [store.exists(key) for key in keys]


@pytest.fixture
def lineage(project: Project) -> list[ModelVersion]:
    """seed -> r1 -> ... -> r5; r2 was promoted over r1, so r1 is the rollback target."""
    seed = make_version(project)
    model_version_deploy(project=project, version=seed)
    versions = [seed]
    for number in range(1, 6):
        versions.append(make_version(project, round=number, parent=versions[-1]))
    version_promote(version=versions[1], user=None, reason="")
    version_promote(version=versions[2], user=None, reason="")
    return versions


def test_gc_keeps_deployed_rollback_target_and_newest_and_retires_the_rest(project, lineage):
    seed, r1, r2, r3, r4, r5 = lineage
    images = make_images(project, 2)
    keys = {version.pk: put_embedding_blobs(version, images) for version in lineage}
    other = Project.objects.create(name="dogs")  # another project's versions are its own
    foreign = make_version(other)
    foreign_keys = put_embedding_blobs(foreign, make_images(other, 1))

    outcome = project_embeddings_gc(project=project, keep_newest=2)

    # deployed r2, rollback target r1, newest two r4 and r5; the seed and r3 go.
    assert outcome.retired == [seed.pk, r3.pk]
    assert outcome.kept == [r1.pk, r2.pk, r4.pk, r5.pk]
    assert status_of(seed, r1, r2, r3, r4, r5) == [
        "retired", "ready", "ready", "retired", "ready", "ready"
    ]  # fmt: skip
    assert outcome.blobs_deleted == 4
    for version in lineage:
        expected = version not in (seed, r3)
        assert stored(keys[version.pk]) == [expected, expected]
    assert stored(foreign_keys) == [True]
    assert status_of(foreign) == ["ready"]


def test_gc_keeps_the_version_an_unfinished_automatic_run_pinned(project, lineage):
    seed, r3 = lineage[0], lineage[3]
    running = Job.objects.create(
        project=project, kind=Job.Kind.AUTOMATIC, status=Job.Status.RUNNING,
        params={"model_version_id": seed.pk},
    )  # fmt: skip
    Job.objects.create(
        project=project, kind=Job.Kind.PREFILL, status=Job.Status.SUCCEEDED,
        params={"model_version_id": r3.pk},
    )  # fmt: skip
    assert project_embeddings_gc(project=project, keep_newest=2).retired == [r3.pk]
    running.status = Job.Status.SUCCEEDED
    running.save(update_fields=["status"])
    assert project_embeddings_gc(project=project, keep_newest=2).retired == [seed.pk]


def test_gc_twice_changes_nothing_more_and_cleans_late_blobs(project, lineage):
    seed = lineage[0]
    images = make_images(project, 1)
    first = project_embeddings_gc(project=project, keep_newest=2)
    assert first.retired
    again = project_embeddings_gc(project=project, keep_newest=2)
    assert (again.retired, again.blobs_deleted, again.jobs_cancelled) == ([], 0, [])
    # A chunk that was still writing after the retirement leaves a blob: the next run takes it.
    late = put_embedding_blobs(seed, images)
    assert project_embeddings_gc(project=project, keep_newest=2).blobs_deleted == 1
    assert stored(late) == [False]


def test_gc_cancels_embedding_jobs_of_retired_versions(project, lineage):
    seed, r1 = lineage[0], lineage[1]
    doomed = job_create(kind=Job.Kind.EMBED, project=project, params={"model_version_id": seed.pk})
    kept = job_create(kind=Job.Kind.EMBED, project=project, params={"model_version_id": r1.pk})
    outcome = project_embeddings_gc(project=project, keep_newest=2)
    assert outcome.jobs_cancelled == [doomed.pk]
    assert Job.objects.get(pk=doomed.pk).status == Job.Status.CANCELLED
    assert Job.objects.get(pk=kept.pk).status == Job.Status.QUEUED


def test_a_retired_version_is_no_longer_served(project, lineage):
    seed = lineage[0]
    project_embeddings_gc(project=project, keep_newest=2)
    project.refresh_from_db()
    with pytest.raises(ModelVersionGone, match="is retired") as caught:
        serving_version(project=project, version_id=seed.pk)
    assert caught.value.deployed_version == lineage[2]  # the tool reloads the live one


def test_the_setting_decides_how_many_newest_versions_stay(project, lineage, settings):
    settings.MASKLOOP_KEEP_VERSIONS = 10
    assert project_embeddings_gc(project=project).retired == []
    settings.MASKLOOP_KEEP_VERSIONS = 1
    # deployed r2, rollback target r1, newest r5
    retired = project_embeddings_gc(project=project).retired
    assert retired == [lineage[0].pk, lineage[3].pk, lineage[4].pk]


def test_gc_refuses_to_keep_fewer_than_one_version(project, lineage):
    with pytest.raises(ValueError, match="at least 1"):
        project_embeddings_gc(project=project, keep_newest=0)
    assert status_of(*lineage) == ["ready"] * 6


def test_a_project_without_a_deployed_version_keeps_its_newest(project):
    versions = [make_version(project, name=f"v{i}") for i in range(4)]
    outcome = embeddings_gc(keep_newest=3)
    assert outcome[project.pk].retired == [versions[0].pk]


def test_the_daily_task_runs_on_the_default_queue_and_collects(project, lineage):
    entry = settings.CELERY_BEAT_SCHEDULE["embeddings-gc"]
    assert entry["task"] == embeddings_gc_task.name == "training.housekeeping.embeddings_gc"
    assert entry["schedule"] == 24 * 3600
    route = celery_app.amqp.router.route({}, embeddings_gc_task.name)
    assert route["queue"].name == "default"
    assert embeddings_gc_task.name in celery_app.tasks
    images = make_images(project, 1)
    key = embedding_key(model_version_id=lineage[0].pk, image_sha256=images[0].sha256)
    get_blob_store().put_bytes(key, b"x")
    result = embeddings_gc_task.apply().get()  # eager, in this process
    # default keep 3 (r3..r5) + deployed r2 + rollback target r1: only the seed goes
    assert result[str(project.pk)] == {"retired": [lineage[0].pk], "blobs_deleted": 1,
                                       "jobs_cancelled": []}  # fmt: skip
    assert not get_blob_store().exists(key)
    assert status_of(lineage[0]) == ["retired"]


def test_a_worker_process_discovers_the_housekeeping_task() -> None:
    """What a fresh worker registers (autodiscovery of <app>/housekeeping.py), in a child."""
    code = (
        "import django; django.setup()\n"
        "from config.celery import app\n"
        "app.loader.import_default_modules()\n"
        "print('training.housekeeping.embeddings_gc' in app.tasks)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.stdout.strip().splitlines()[-1:] == ["True"], done.stderr[-2000:]
