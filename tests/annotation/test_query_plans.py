"""The mask table's indexes serve the queries that run against it at scale (PostgreSQL).

A module fixture fills the table with 200,000 rows the way a multi-project data engine holds
them (10 projects x 200 images x 100 masks; per project mostly automatic masks of two runs,
prefill masks and some annotators' masks over 60 days), runs ``ANALYZE`` and removes it all
afterwards. Each test runs one real selector or service (the tool, the exporter, the run
writer, the stats, the review queue, the project list) with its queries captured, and asks
PostgreSQL for each query's plan (``EXPLAIN (FORMAT JSON)``, nothing executed): the mask table
must be read through an index, never by a sequential scan, and the exporter's order must come
from the index (no sort of the selected masks).
"""

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotation.models import Image, Mask, Project, Stage
from annotation.selectors.masks import export_counts, mask_groups_for_export, masks_for_export
from annotation.selectors.projects import image_accepted_masks, projects_with_stats
from annotation.selectors.review import review_queue
from annotation.selectors.stats import annotator_stats, project_stats
from annotation.services.masks_bulk import masks_replace_for_run
from engine.models import Job

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL query plans"),
]

PROJECTS, IMAGES_PER_PROJECT, MASKS_PER_IMAGE = 10, 200, 100
TABLE = Mask._meta.db_table


class Scale:
    """Ids of the filled table: ``projects``, ``images`` (per project), ``runs``/``prefill``
    (per project), ``annotators``."""

    projects: list[int]
    images: dict[int, list[int]]
    runs: dict[int, list[int]]
    prefill: dict[int, int]
    annotators: list[int]


# One row per mask number g: image g // MASKS_PER_IMAGE; kind g % 20: 0 an annotator's assisted
# mask (a quarter of them reviewed), 1 a prefill mask (proposed/accepted/rejected), otherwise
# an automatic mask of run 0 or run 1; created over the last 60 days.
_FILL = f"""
INSERT INTO {TABLE} (project_id, image_id, job_id, annotator_id, rle_counts, bbox, area,
                     stage, source, status, prompts, rejection_reason, seconds_spent, clicks,
                     predicted_iou, stability_score, reviewed_at, created_at, updated_at)
SELECT m.project_id, m.image_id,
       CASE m.kind WHEN 0 THEN NULL WHEN 1 THEN m.prefill_id ELSE m.run_id END,
       CASE m.kind WHEN 0 THEN (%(annotators)s::bigint[])[1 + g %% 5] END,
       'PPYo1', '[1, 2, 3, 4]'::jsonb, 12,
       CASE m.kind WHEN 0 THEN 'assisted_manual' WHEN 1 THEN 'semi_automatic'
                   ELSE 'fully_automatic' END,
       CASE m.kind WHEN 0 THEN 'assisted' WHEN 1 THEN 'prefill' ELSE 'automatic' END,
       CASE WHEN m.kind = 1 THEN (ARRAY['proposed', 'accepted', 'rejected'])[1 + g / 20 %% 3]
            ELSE 'accepted' END,
       '[]'::jsonb, '',
       CASE m.kind WHEN 0 THEN 4.5 END, CASE m.kind WHEN 0 THEN 3 END,
       CASE WHEN m.kind > 1 THEN 0.9 END, CASE WHEN m.kind > 1 THEN 0.97 END,
       CASE WHEN m.kind = 0 AND g %% 4 = 0 THEN now() END,
       now() - (g %% 60) * interval '1 day', now()
FROM generate_series(0, %(total)s - 1) AS g
CROSS JOIN LATERAL (
    SELECT (%(image_ids)s::bigint[])[1 + g / {MASKS_PER_IMAGE}] AS image_id,
           (%(image_projects)s::bigint[])[1 + g / {MASKS_PER_IMAGE}] AS project_id,
           (%(image_runs)s::bigint[])[1 + g / {MASKS_PER_IMAGE}] AS run_id,
           (%(image_prefill)s::bigint[])[1 + g / {MASKS_PER_IMAGE}] AS prefill_id,
           g %% 20 AS kind
) AS m
"""


def _fill() -> Scale:
    scale = Scale()
    users = [User.objects.create_user(f"scale-annotator-{n}") for n in range(5)]
    scale.annotators = [user.pk for user in users]
    scale.projects, scale.images, scale.runs, scale.prefill = [], {}, {}, {}
    image_ids, image_projects, image_runs, image_prefill = [], [], [], []
    for p in range(PROJECTS):
        project = Project.objects.create(name=f"scale-{p}", stage=Stage.FULLY_AUTOMATIC)
        images = Image.objects.bulk_create(
            Image(
                project=project,
                blob_key=f"images/{p:04d}{n:060d}",
                sha256=f"{p:04d}{n:060d}",
                width=2250,
                height=1500,
                format="JPEG",
                byte_size=1,
            )
            for n in range(IMAGES_PER_PROJECT)
        )
        runs = [Job.objects.create(project=project, kind=Job.Kind.AUTOMATIC) for _ in range(2)]
        prefill = Job.objects.create(project=project, kind=Job.Kind.PREFILL)
        scale.projects.append(project.pk)
        scale.images[project.pk] = [image.pk for image in images]
        scale.runs[project.pk] = [run.pk for run in runs]
        scale.prefill[project.pk] = prefill.pk
        for n, image in enumerate(images):
            image_ids.append(image.pk)
            image_projects.append(project.pk)
            image_runs.append(runs[n % 2].pk)  # each run covers half of the images
            image_prefill.append(prefill.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            _FILL,
            {
                "annotators": scale.annotators,
                "total": len(image_ids) * MASKS_PER_IMAGE,
                "image_ids": image_ids,
                "image_projects": image_projects,
                "image_runs": image_runs,
                "image_prefill": image_prefill,
            },
        )
        cursor.execute(f"ANALYZE {TABLE}")
        cursor.execute(f"ANALYZE {Image._meta.db_table}")
    return scale


@pytest.fixture(scope="module")
def scale(django_db_setup: None, django_db_blocker: Any) -> Iterator[Scale]:
    """The filled table, committed for the module's tests (which roll back their own writes)."""
    with django_db_blocker.unblock():
        try:
            yield _fill()
        finally:
            with connection.cursor() as cursor:
                projects = list(Project.objects.filter(name__startswith="scale-").values_list("pk"))
                cursor.execute(
                    f"DELETE FROM {TABLE} WHERE project_id = ANY(%s)", [[p for (p,) in projects]]
                )
            Project.objects.filter(name__startswith="scale-").delete()
            User.objects.filter(username__startswith="scale-annotator-").delete()


# --- plans -----------------------------------------------------------------------------------


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _mask_queries(run: Callable[[], object]) -> list[str]:
    """The SQL of every query ``run`` sends that reads or deletes from the mask table."""
    with CaptureQueriesContext(connection) as captured:
        run()
    return [
        query["sql"]
        for query in captured.captured_queries
        if f'"{TABLE}"' in query["sql"]
        and query["sql"].lstrip().upper().startswith(("SELECT", "DELETE", "DECLARE"))
    ]


def _plan(sql: str) -> dict[str, Any]:
    """The plan of ``sql``; a ``DECLARE`` (a server-side cursor, ``.iterator()``) is explained
    as it is, so the plan is costed as the cursor's (``cursor_tuple_fraction``)."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        return cursor.fetchone()[0][0]["Plan"]


def _mask_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node in _nodes(plan) if node.get("Relation Name") == TABLE]


def _summary(plan: dict[str, Any]) -> str:
    return "; ".join(
        f"{node['Node Type']}" + (f" on {node['Index Name']}" if "Index Name" in node else "")
        for node in _nodes(plan)
    )


def assert_indexed(run: Callable[[], object], *, ordered: bool = False) -> set[str]:
    """Every mask-table query of ``run`` reads the table through an index (and, ``ordered``,
    gets its order from it: no Sort node); returns the indexes used."""
    queries = _mask_queries(run)
    assert queries, "the call sent no query on the mask table"
    used: set[str] = set()
    for sql in queries:
        plan = _plan(sql)
        scans = _mask_scans(plan)
        assert scans, f"no mask-table node in: {_summary(plan)}\n{sql}"
        for node in scans:
            assert node["Node Type"] != "Seq Scan", f"{_summary(plan)}\n{sql}"
            used.add(node.get("Index Name", node["Node Type"]))
        for node in _nodes(plan):
            if node["Node Type"] == "Bitmap Index Scan":
                used.add(node["Index Name"])
        if ordered:
            sorts = [n for n in _nodes(plan) if n["Node Type"] in {"Sort", "Incremental Sort"}]
            assert not sorts, f"the order is not the index's: {_summary(plan)}\n{sql}"
    return used


def _consume_groups(**filters: Any) -> None:
    for _image, masks in mask_groups_for_export(**filters, chunk_size=500):
        for _mask in masks:
            pass


# --- the queries -----------------------------------------------------------------------------


def test_the_tool_reads_one_images_masks_by_index(scale):
    image = Image.objects.get(pk=scale.images[scale.projects[3]][17])
    used = assert_indexed(lambda: list(image_accepted_masks(image=image)))
    assert used & {"mask_image_status", "mask_job_image"}, used
    assert_indexed(lambda: list(Mask.objects.filter(image=image).order_by("id")))


def test_the_coco_exporter_streams_a_project_in_id_order_from_the_index(scale):
    project = Project.objects.get(pk=scale.projects[5])
    used = assert_indexed(
        lambda: list(masks_for_export(project=project).iterator(chunk_size=1000)), ordered=True
    )
    assert "mask_project_status_id" in used, used


def test_the_sa1b_exporter_streams_per_image_in_id_order_from_the_index(scale):
    project = Project.objects.get(pk=scale.projects[5])
    used = assert_indexed(lambda: _consume_groups(project=project), ordered=True)
    assert "mask_project_status_image" in used, used


def test_the_export_of_one_run_reads_by_index(scale):
    project = Project.objects.get(pk=scale.projects[6])
    run = scale.runs[project.pk][1]
    assert_indexed(lambda: _consume_groups(project=project, job_id=run))
    assert_indexed(lambda: list(masks_for_export(project=project, job_id=run)))
    assert_indexed(lambda: export_counts(project=project, job_id=run))


def test_the_run_writer_deletes_one_images_masks_of_a_run_by_index(scale):
    project = Project.objects.get(pk=scale.projects[2])
    image = Image.objects.get(pk=scale.images[project.pk][10])
    run = Job.objects.get(pk=scale.runs[project.pk][0])

    def rewrite() -> None:
        masks_replace_for_run(
            job=run,
            image=image,
            records=[],
            source="automatic",
            status="accepted",
            stage="fully_automatic",
            model_version=None,
        )

    used = assert_indexed(rewrite)
    assert "mask_job_image" in used, used


def test_the_stats_pages_read_by_index(scale):
    project = Project.objects.get(pk=scale.projects[4])
    now = timezone.now() + dt.timedelta(minutes=1)
    used = assert_indexed(lambda: project_stats(project=project, days=30, now=now))
    assert used & {"mask_project_time", "mask_annotator_time"}, used
    user_id = scale.annotators[2]
    used = assert_indexed(
        lambda: annotator_stats(project=project, user_id=user_id, days=30, now=now)
    )
    assert "mask_annotator_time" in used, used


def _index_bytes(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(%s::regclass)", [name])
        return int(cursor.fetchone()[0])


def test_automatic_masks_stay_out_of_the_people_indexes(scale):
    """Nine masks in ten are automatic (no annotator, no reviewer): the partial indexes of the
    stats and of reviewers hold the rest only, a fraction of a full index's size."""
    full = _index_bytes("mask_project_status_id")
    for name in ("mask_project_time", "mask_annotator_time", "mask_reviewed_by"):
        assert _index_bytes(name) < 0.25 * full, name


def test_the_review_queue_reads_by_index(scale):
    project = Project.objects.get(pk=scale.projects[7])
    assert_indexed(lambda: list(review_queue(project=project)[:20]))


def test_the_project_list_counts_by_index(scale):
    admin = User.objects.create_superuser("scale-admin")
    assert_indexed(lambda: list(projects_with_stats(user=admin)))
