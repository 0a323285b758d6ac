import pytest

from annotation.models import Project
from engine.models import Job
from engine.services.jobs import (
    JobCancelled,
    job_cancel,
    job_create,
    job_fail,
    job_progress,
    job_start,
    job_succeed,
)

pytestmark = pytest.mark.django_db


def _job() -> Job:
    project = Project.objects.create(name="p")
    return job_create(kind=Job.Kind.EXPORT, project=project, params={"format": "coco"})


def test_job_runs_through_its_lifecycle_with_progress():
    job = _job()
    started = job_start(job_id=job.pk, task_id="t-1")
    assert started is not None
    assert started.status == Job.Status.RUNNING
    assert started.attempts == 1
    job_progress(job_id=job.pk, done=5, total=10, message="halfway")
    job.refresh_from_db()
    assert job.progress == 0.5
    assert job.message == "halfway"
    job_succeed(job_id=job.pk, result={"files": 1})
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert job.progress_done == 10
    assert job.finished_at is not None


def test_job_start_is_a_noop_for_a_finished_job():
    job = _job()
    job_start(job_id=job.pk)
    job_succeed(job_id=job.pk, result={})
    assert job_start(job_id=job.pk) is None
    job.refresh_from_db()
    assert job.attempts == 1


def test_progress_on_a_cancelled_job_raises_and_fail_keeps_it_cancelled():
    job = _job()
    job_start(job_id=job.pk)
    job_cancel(job_id=job.pk)
    with pytest.raises(JobCancelled):
        job_progress(job_id=job.pk, done=1)
    job_fail(job_id=job.pk, error=RuntimeError("late"))
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED


def test_failure_records_the_error_type_and_message():
    job = _job()
    job_start(job_id=job.pk)
    job_fail(job_id=job.pk, error=ValueError("bad shard"))
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error == "ValueError: bad shard"


def test_unknown_job_kind_is_refused():
    with pytest.raises(ValueError, match="unknown job kind"):
        job_create(kind="mining")
