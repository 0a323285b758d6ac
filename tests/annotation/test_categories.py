"""Categories, the optional class labels of masks: the admins' API and services, the category an
accept or an edit gives a mask, refusals that change nothing, and COCO exports and imports that
keep them (round trip) or leave a class-agnostic project class-agnostic."""

import io
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.models import Category, Image, Mask, Project
from annotation.services.categories import (
    MAX_CATEGORIES,
    PALETTE,
    CategoryInUse,
    InvalidCategory,
    category_create,
    category_delete,
    category_update,
)
from annotation.services.coco_import import CocoImportRefused, coco_import
from annotation.services.leases import image_lease_release, image_lease_take, image_mark_done
from annotation.services.mask_edit import mask_edit
from annotation.services.masks import mask_accept, mask_create
from annotation.services.review import mask_approve, mask_reject
from engine.models import Job
from tests.annotation.test_coco_import import one_triangle, write
from tests.annotation.test_export import coco_document, run_export
from tests.annotation.test_web_members import logged_in
from tests.annotation.workflow import make_images, member, rle_of, square
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def _accept(image: Image, user: User, category: Category | None = None, *, x0: int = 10) -> Mask:
    mask, _ = mask_accept(
        image=image,
        annotator=user,
        rle=rle_of(square(x0=x0)),
        source="assisted",
        category_id=None if category is None else category.pk,
    )
    return mask


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


# --- managing them -----------------------------------------------------------------------------


def test_admins_create_rename_recolour_and_list_categories(project, admin_user, annotator_user):
    admin = client_for(admin_user)
    url = f"/api/projects/{project.pk}/categories/"
    car = admin.post(url, {"name": "  car  "}, format="json")
    assert car.status_code == 201, car.content
    person = admin.post(url, {"name": "person", "color": "#00FF00"}, format="json").json()
    assert car.json() | {"created_at": None} == {
        "id": car.json()["id"],
        "name": "car",  # whitespace folded
        "color": PALETTE[0],
        "coco_id": 1,
        "masks": 0,
        "created_at": None,
    }
    assert (person["color"], person["coco_id"]) == ("#00ff00", 2)
    (image,) = make_images(project, 1)
    _accept(image, annotator_user, Category.objects.get(pk=person["id"]))
    listed = client_for(annotator_user).get(url).json()  # any member reads them
    assert [(c["name"], c["masks"]) for c in listed] == [("car", 0), ("person", 1)]
    renamed = admin.patch(f"{url}{person['id']}/", {"name": "pedestrian"}, format="json")
    assert renamed.status_code == 200
    assert renamed.json()["masks"] == 1
    assert Category.objects.get(pk=person["id"]).name == "pedestrian"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": ""}, 400, "invalid"),
        ({"name": "   "}, 400, "invalid_category"),
        ({"name": "x" * 101}, 400, "invalid"),
        ({"name": "bad\u0007name"}, 400, "invalid_category"),
        ({"name": "ok", "color": "red"}, 400, "invalid_category"),
        ({"name": "ok", "coco_id": 0}, 400, "invalid"),
        ({"name": "CAR"}, 409, "conflict"),  # names are unique whatever their case
        ({"name": "truck", "coco_id": 7}, 409, "conflict"),  # the COCO id is taken
    ],
)
def test_bad_categories_are_refused_and_nothing_is_written(project, admin_user, body, status, code):
    category_create(project=project, name="car", coco_id=7)
    answer = client_for(admin_user).post(
        f"/api/projects/{project.pk}/categories/", body, format="json"
    )
    assert answer.status_code == status, answer.content
    assert answer.json()["code"] == code
    assert list(Category.objects.values_list("name", flat=True)) == ["car"]


def test_only_admins_write_categories_and_outsiders_see_none(
    project, annotator_user, outsider_user
):
    car = category_create(project=project, name="car")
    url = f"/api/projects/{project.pk}/categories/"
    reviewer = member(project, "rita", "reviewer")
    for user in (annotator_user, reviewer):
        client = client_for(user)
        assert client.post(url, {"name": "bus"}, format="json").status_code == 403
        assert client.patch(f"{url}{car.pk}/", {"name": "bus"}, format="json").status_code == 403
        assert client.delete(f"{url}{car.pk}/").status_code == 403
    assert client_for(outsider_user).get(url).status_code == 404
    assert list(Category.objects.values_list("name", flat=True)) == ["car"]


def test_a_category_in_use_is_deleted_only_when_forced(project, admin_user, annotator_user):
    car = category_create(project=project, name="car")
    (image,) = make_images(project, 1)
    mask = _accept(image, annotator_user, car)
    url = f"/api/projects/{project.pk}/categories/{car.pk}/"
    refused = client_for(admin_user).delete(url)
    assert refused.status_code == 409
    assert (refused.json()["code"], refused.json()["masks"]) == ("category_in_use", 1)
    mask.refresh_from_db()
    assert mask.category_id == car.pk
    assert client_for(admin_user).delete(url + "?force=true").status_code == 204
    mask.refresh_from_db()
    assert mask.category_id is None
    assert not Category.objects.exists()
    assert client_for(admin_user).delete(url).status_code == 404


def test_service_limits(project):
    other = Project.objects.create(name="other")
    category_create(project=other, name="car")  # names are per project
    car = category_create(project=project, name="car")
    with pytest.raises(InvalidCategory):
        category_update(category=car, color="#12345")
    Category.objects.bulk_create(
        Category(project=project, name=f"c{i}", color="#000000", coco_id=100 + i)
        for i in range(MAX_CATEGORIES - 1)
    )
    with pytest.raises(InvalidCategory, match="at most"):
        category_create(project=project, name="one too many")
    _accept(make_images(project, 1)[0], member(project, "ann", "annotator"), car)
    with pytest.raises(CategoryInUse):
        category_delete(category=car)
    assert category_delete(category=car, force=True) == 1


# --- on masks ----------------------------------------------------------------------------------


def test_accept_and_edit_set_the_category_and_a_foreign_one_is_refused(
    project, annotator_user, admin_user
):
    car = category_create(project=project, name="car")
    bus = category_create(project=project, name="bus")
    foreign = category_create(project=Project.objects.create(name="other"), name="car")
    (image,) = make_images(project, 1)
    client = client_for(annotator_user)
    body = {"rle": rle_of(square()), "source": "assisted"}
    accepted = client.post(
        f"/api/images/{image.pk}/masks/", {**body, "category": car.pk}, format="json"
    )
    assert accepted.status_code == 201
    assert accepted.json()["category"] == car.pk
    refused = client.post(
        f"/api/images/{image.pk}/masks/", {**body, "category": foreign.pk}, format="json"
    )
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_category")
    assert Mask.objects.count() == 1
    mask = Mask.objects.get()
    mask_approve(mask=mask, reviewer=member(project, "rita", "reviewer"))
    relabel = client.patch(f"/api/masks/{mask.pk}/", {"category": bus.pk}, format="json")
    assert relabel.status_code == 200, relabel.content
    mask.refresh_from_db()
    # A relabel is an edit: counted, the pixels kept, back in the review queue.
    assert (mask.category_id, mask.edit_count, mask.reviewed_at) == (bus.pk, 1, None)
    assert mask.rle_counts == accepted.json()["segmentation"]["counts"]
    bad = client.patch(f"/api/masks/{mask.pk}/", {"category": foreign.pk}, format="json")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_category")
    mask.refresh_from_db()
    assert (mask.category_id, mask.edit_count) == (bus.pk, 1)
    kept = client.patch(f"/api/masks/{mask.pk}/", {"rle": rle_of(square(x1=35))}, format="json")
    assert kept.status_code == 200
    assert kept.json()["category"] == bus.pk
    cleared = mask_edit(mask=mask, user=annotator_user, category=None)
    assert cleared.category_id is None
    assert cleared.edit_count == 3
    mask_edit(mask=cleared, user=annotator_user, category=car.pk)
    listed = client.get(f"/api/projects/{project.pk}/masks/", {"category": car.pk}).json()
    assert [row["id"] for row in listed["results"]] == [mask.pk]
    listed = client.get(f"/api/projects/{project.pk}/masks/", {"category": bus.pk}).json()
    assert listed["results"] == []


# --- COCO ---------------------------------------------------------------------------------------


def test_coco_export_lists_the_categories_and_an_import_brings_them_back(
    project, annotator_user, tmp_path: Path
):
    car = category_create(project=project, name="car", color="#ff0000", coco_id=3)
    bus = category_create(project=project, name="bus")
    first, second = make_images(project, 2)
    _accept(first, annotator_user, car, x0=3)
    _accept(second, annotator_user, bus, x0=6)
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
    _accept(image, annotator_user)
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
    kept = _accept(first, annotator_user, car, x0=3)
    _accept(second, annotator_user, bus, x0=6)
    _accept(second, annotator_user, x0=9)  # none
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
    _accept(image, annotator_user, x0=1)
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
    car_mask = _accept(first, annotator_user, car, x0=3)
    _accept(first, annotator_user, bus, x0=6)
    _accept(second, annotator_user, bus, x0=9)
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


def test_a_proposed_prefilled_mask_is_labelled_before_the_image_is_done(project, annotator_user):
    car = category_create(project=project, name="car")
    (image,) = make_images(project, 1)
    proposed = mask_create(
        image=image,
        rle=rle_of(square()),
        source="prefill",
        stage="semi_automatic",
        status="proposed",
    )
    client = client_for(annotator_user)
    other = member(project, "olga", "annotator")
    image_lease_take(image=image, user=other)
    taken = client.patch(f"/api/masks/{proposed.pk}/", {"category": car.pk}, format="json")
    assert (taken.status_code, taken.json()["code"]) == (409, "lease_taken")
    image_lease_release(image=image, user=other)
    answer = client.patch(f"/api/masks/{proposed.pk}/", {"category": car.pk}, format="json")
    assert answer.status_code == 200, answer.content
    proposed.refresh_from_db()
    # Labelled, still the model's proposal: not accepted, not an edit.
    assert (proposed.category_id, proposed.status, proposed.edit_count) == (car.pk, "proposed", 0)
    redrawn = client.patch(
        f"/api/masks/{proposed.pk}/",
        {"rle": rle_of(square(x0=3)), "category": None},
        format="json",
    )
    assert (redrawn.status_code, redrawn.json()["code"]) == (409, "conflict")  # pixels: no
    image_mark_done(image=image, user=annotator_user)
    proposed.refresh_from_db()
    assert (proposed.status, proposed.category_id) == ("accepted", car.pk)


def test_the_categories_command_lists_adds_and_deletes(project, annotator_user):
    out = io.StringIO()
    call_command("categories", project.name, stdout=out)
    assert "has no categories" in out.getvalue()
    out = io.StringIO()
    call_command("categories", project.name, "--add", "car", "person", stdout=out)
    assert "added 'car' (COCO id 1)" in out.getvalue()
    assert "    2  person" in out.getvalue()
    car = Category.objects.get(name="car")
    _accept(make_images(project, 1)[0], annotator_user, car)
    with pytest.raises(CommandError, match=r"1 masks carry category 'car'.*nothing changed"):
        call_command("categories", project.name, "--delete", "person", "CAR", "--add", "bus")
    assert sorted(Category.objects.values_list("name", flat=True)) == ["car", "person"]
    with pytest.raises(CommandError, match="has no category 'tram'"):
        call_command("categories", project.name, "--delete", "tram")
    out = io.StringIO()
    call_command("categories", project.name, "--delete", "car", "--force", stdout=out)
    assert "deleted 'car' (1 masks left without a category)" in out.getvalue()
    assert list(Category.objects.values_list("name", flat=True)) == ["person"]
