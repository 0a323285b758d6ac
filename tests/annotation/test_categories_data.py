"""Categories in the data that leaves and enters a project: COCO exports list them and an
import brings them back (or leaves a class-agnostic project class-agnostic), exports of some
categories, statistics per category, the review queue narrowed to one."""

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.models import Category, Image, Mask, Project
from annotation.services.categories import PALETTE, category_create
from annotation.services.coco_import import CocoImportRefused, coco_import
from annotation.services.masks import mask_accept, mask_create
from annotation.services.review import mask_reject
from engine.models import Job
from tests.annotation.test_categories import accept_mask
from tests.annotation.test_coco_import import one_triangle, write
from tests.annotation.test_export import coco_document, run_export
from tests.annotation.test_web_members import logged_in
from tests.annotation.workflow import make_images, member, rle_of, square
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def _copy_images(target: Project, images: list[Image]) -> None:
    """The same image rows (file names, sizes, blobs) in ``target``."""
    for image in images:
        fields = {
            f.attname: getattr(image, f.attname)
            for f in Image._meta.concrete_fields
            if f.name not in ("id", "project")
        }
        Image.objects.create(**fields, project=target)


def _labels(project: Project) -> dict[str, str | None]:
    """Each mask's pixels (counts) -> its category name."""
    return {
        m.rle_counts: (m.category.name if m.category else None)
        for m in Mask.objects.filter(project=project).select_related("category")
    }


# --- COCO ---------------------------------------------------------------------------------------


def test_coco_export_lists_the_categories_and_an_import_brings_them_back(
    project, annotator_user, tmp_path: Path
):
    car = category_create(project=project, name="car", color="#ff0000", coco_id=3)
    bus = category_create(project=project, name="bus")
    first, second = make_images(project, 2)
    accept_mask(first, annotator_user, car, x0=3)
    accept_mask(second, annotator_user, bus, x0=6)
    mask_create(image=second, rle=rle_of(square(y0=20, y1=25)), source="manual")  # none
    document = coco_document(run_export(project, "coco"))
    assert document["categories"] == [
        {"id": 0, "name": "object", "supercategory": "object", "class_agnostic": True},
        {"id": 3, "name": "car", "supercategory": "object", "color": "#ff0000"},
        {"id": 4, "name": "bus", "supercategory": "object", "color": PALETTE[1]},
    ]
    assert sorted(a["category_id"] for a in document["annotations"]) == [0, 3, 4]

    copy = Project.objects.create(name="copy")
    category_create(project=copy, name="BUS", coco_id=4)  # matched by name, any case
    _copy_images(copy, [first, second])
    summary = coco_import(project=copy, path=write(tmp_path, document))
    assert (summary.masks, summary.categories, summary.categories_created) == (3, 3, 1)
    # Each mask comes back with its category (the copy's "BUS" stands for "bus").
    assert set(_labels(copy).values()) == {"car", "BUS", None}
    lowered = {counts: (name.lower() if name else None) for counts, name in _labels(copy).items()}
    assert lowered == _labels(project)
    assert Category.objects.get(project=copy, name="car").coco_id == 3  # the file's id, free


def test_a_class_agnostic_project_round_trips_without_categories(
    project, annotator_user, tmp_path: Path
):
    (image,) = make_images(project, 1)
    accept_mask(image, annotator_user)
    document = coco_document(run_export(project, "coco"))
    assert [c["id"] for c in document["categories"]] == [1]
    copy = Project.objects.create(name="copy")
    _copy_images(copy, [image])
    summary = coco_import(project=copy, path=write(tmp_path, document))
    assert (summary.masks, summary.categories_created) == (1, 0)
    assert not Category.objects.filter(project=copy).exists()
    assert Mask.objects.get(project=copy).category_id is None


def test_coco_import_refuses_bad_categories_and_can_leave_them_out(project, tmp_path: Path):
    (image,) = make_images(project, 1)
    Image.objects.filter(pk=image.pk).update(file_name="a.png")
    image.file_name = "a.png"
    base = one_triangle(image)
    base["annotations"][0]["category_id"] = 5
    cases: list[tuple[dict[str, Any], str]] = [
        ({"categories": {"id": 5}}, "categories must be a list"),
        ({"categories": [{"id": "5", "name": "car"}]}, "needs an integer id"),
        ({"categories": [{"id": 5, "name": ""}]}, "needs a name"),
        ({"categories": [{"id": 5, "name": "a"}, {"id": 5, "name": "b"}]}, "appears twice"),
        ({"categories": [{"id": 6, "name": "car"}]}, "category_id 5 is not one of"),
    ]
    for extra, message in cases:
        with pytest.raises(CocoImportRefused, match=message):
            coco_import(project=project, path=write(tmp_path, {**base, **extra}))
    assert not Mask.objects.exists()
    assert not Category.objects.exists()
    bad = {**base, "categories": [{"id": 6, "name": "car"}]}
    summary = coco_import(project=project, path=write(tmp_path, bad), keep_categories=False)
    assert (summary.masks, summary.categories_created) == (1, 0)
    assert Mask.objects.get().category_id is None
    assert not Category.objects.exists()


def test_an_export_of_some_categories_holds_only_their_masks(
    project, admin_user, annotator_user, tmp_path: Path
):
    car = category_create(project=project, name="car")
    bus = category_create(project=project, name="bus")
    foreign = category_create(project=Project.objects.create(name="other"), name="car")
    first, second = make_images(project, 2)
    kept = accept_mask(first, annotator_user, car, x0=3)
    accept_mask(second, annotator_user, bus, x0=6)
    accept_mask(second, annotator_user, x0=9)  # none
    document = coco_document(run_export(project, "coco", categories=[car.pk]))
    assert [a["id"] for a in document["annotations"]] == [kept.pk]
    assert [c["name"] for c in document["categories"]] == ["car"]
    assert [i["id"] for i in document["images"]] == [first.pk]
    assert document["info"]["filters"]["categories"] == [car.coco_id]
    url = f"/api/projects/{project.pk}/exports/"
    for bad in ([foreign.pk], [], "car"):
        answer = client_for(admin_user).post(
            url, {"format": "coco", "categories": bad}, format="json"
        )
        assert answer.status_code == 400, (bad, answer.content)
    assert not Job.objects.filter(kind=Job.Kind.EXPORT).exclude(status="succeeded").exists()
    answer = client_for(admin_user).post(
        url, {"format": "coco", "categories": [bus.pk, car.pk]}, format="json"
    )
    assert answer.status_code == 202
    assert Job.objects.get(pk=answer.json()["id"]).params["categories"] == sorted([bus.pk, car.pk])
    out = io.StringIO()
    call_command(
        "export_dataset",
        project.name,
        "--format",
        "coco",
        "--category",
        "BUS",
        "--no-progress",
        stdout=out,
        stderr=io.StringIO(),
    )
    job = Job.objects.filter(kind=Job.Kind.EXPORT).latest("id")
    assert job.params["categories"] == [bus.pk]
    with pytest.raises(CommandError, match="has no category 'tram'"):
        call_command("export_dataset", project.name, "--format", "coco", "--category", "tram")


def test_statistics_per_category(project, admin_user, annotator_user):
    (image,) = make_images(project, 1)
    accept_mask(image, annotator_user, x0=1)
    stats_url = f"/api/projects/{project.pk}/stats/"
    assert client_for(admin_user).get(stats_url).json()["per_category"] == []
    car = category_create(project=project, name="car")
    category_create(project=project, name="bus")  # no masks yet: listed with zeros
    for x0, seconds in ((3, 10.0), (6, 20.0)):
        mask, _ = mask_accept(
            image=image,
            annotator=annotator_user,
            rle=rle_of(square(x0=x0)),
            source="assisted",
            clicks=2,
            seconds_spent=seconds,
            category_id=car.pk,
        )
    mask_reject(mask=mask, reviewer=member(project, "rita", "reviewer"), reason="not a car")
    rows = client_for(admin_user).get(stats_url).json()["per_category"]
    assert [(r["name"], r["masks"], r["seconds_per_mask"]) for r in rows] == [
        ("car", 2, 15.0),
        ("bus", 0, None),
        (None, 1, None),
    ]
    assert (rows[0]["masks_rejected"], rows[0]["rejection_rate"]) == (1, 1.0)
    html = logged_in(admin_user).get(f"/projects/{project.pk}/stats/").content.decode()
    assert 'id="category-table"' in html
    assert 'data-category="car"' in html


def test_the_review_queue_narrows_to_one_category(project, admin_user, annotator_user):
    car = category_create(project=project, name="car")
    bus = category_create(project=project, name="bus")
    first, second = make_images(project, 2)
    car_mask = accept_mask(first, annotator_user, car, x0=3)
    accept_mask(first, annotator_user, bus, x0=6)
    accept_mask(second, annotator_user, bus, x0=9)
    api = client_for(admin_user)
    queue = api.get(f"/api/projects/{project.pk}/review/", {"category": car.pk}).json()
    assert [item["image"]["id"] for item in queue["results"]] == [first.pk]
    queue = api.get(f"/api/projects/{project.pk}/review/", {"category": bus.pk}).json()
    assert [item["image"]["id"] for item in queue["results"]] == [first.pk, second.pk]
    page = logged_in(admin_user).get(f"/projects/{project.pk}/review/", {"category": car.pk})
    html = page.content.decode()
    assert 'id="review-category-filter"' in html
    assert f'data-mask-id="{car_mask.pk}"' in html
    assert html.count('class="mask-row"') == 1  # the bus mask of the same image is not listed
    assert page.context["queue_masks"] == 1
    # The page draws the mask in its category's colour.
    [drawn] = page.context["review_data"]["images"][0]["masks"]
    assert drawn["color"] == [int(car.color[i : i + 2], 16) for i in (1, 3, 5)]


def test_the_sent_back_page_names_the_category(project, annotator_user):
    car = category_create(project=project, name="car")
    (image,) = make_images(project, 1)
    mask = accept_mask(image, annotator_user, car)
    mask_reject(mask=mask, reviewer=member(project, "rita", "reviewer"), reason="a bus")
    html = logged_in(annotator_user).get(f"/projects/{project.pk}/sent-back/").content.decode()
    assert 'data-mask-category="car"' in html
