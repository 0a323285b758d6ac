"""Where a job read or wrote on the server (an import's folder, an export's --out) is for the
project's admins: other members see the job without it, over the API and on its page."""

import pytest
from django.test import Client

from engine.models import Job
from engine.services.jobs import job_create
from tests.factories import client_for

pytestmark = pytest.mark.django_db

FOLDER = "/srv/private/photos"
OUT = "s3://team-bucket/exports/cats"


@pytest.fixture
def jobs(project, admin_user) -> dict[str, Job]:
    ingest = job_create(
        kind=Job.Kind.INGEST, project=project, params={"source": FOLDER}, created_by=admin_user
    )
    export = job_create(
        kind=Job.Kind.EXPORT,
        project=project,
        params={"format": "coco", "source": "manual", "out": OUT},
        created_by=admin_user,
    )
    export.result = {"files": [], "out": OUT}
    export.save()
    return {"ingest": ingest, "export": export}


def test_members_see_a_job_without_its_locations(jobs, annotator_user, project):
    client = client_for(annotator_user)
    ingest = client.get(f"/api/jobs/{jobs['ingest'].pk}/").json()
    assert ingest["params"] == {}
    export = client.get(f"/api/jobs/{jobs['export'].pk}/").json()
    # "source" of an export is the mask-source filter, not a place: it stays.
    assert export["params"] == {"format": "coco", "source": "manual"}
    assert export["result"] == {"files": []}
    listed = client.get(f"/api/projects/{project.pk}/jobs/").json()["results"]
    assert FOLDER not in str(listed)
    assert OUT not in str(listed)


def test_admins_see_where_their_jobs_read_and_wrote(jobs, admin_user, project):
    client = client_for(admin_user)
    assert client.get(f"/api/jobs/{jobs['ingest'].pk}/").json()["params"] == {"source": FOLDER}
    assert client.get(f"/api/jobs/{jobs['export'].pk}/").json()["result"]["out"] == OUT
    listed = client.get(f"/api/projects/{project.pk}/jobs/").json()["results"]
    assert FOLDER in str(listed)


def test_the_job_page_shows_the_folder_to_admins_only(jobs, admin_user, annotator_user):
    url = f"/jobs/{jobs['ingest'].pk}/"
    member, admin = Client(), Client()
    member.force_login(annotator_user)
    admin.force_login(admin_user)
    assert FOLDER.encode() not in member.get(url).content
    assert FOLDER.encode() in admin.get(url).content
