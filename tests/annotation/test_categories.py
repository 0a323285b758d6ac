"""Categories, the optional class labels of masks: the admins' API, services and command, the
category an accept or an edit gives a mask (a prefilled one too), refusals that change nothing,
and a project deleted with its categories. COCO, exports, stats and review:
test_categories_data.py."""

import io

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
from annotation.services.leases import image_lease_release, image_lease_take, image_mark_done
from annotation.services.mask_edit import mask_edit
from annotation.services.masks import mask_accept, mask_create
from annotation.services.project_deletion import project_delete
from annotation.services.review import mask_approve
from tests.annotation.workflow import make_images, member, rle_of, square
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def accept_mask(
    image: Image, user: User, category: Category | None = None, *, x0: int = 10
) -> Mask:
    mask, _ = mask_accept(
        image=image,
        annotator=user,
        rle=rle_of(square(x0=x0)),
        source="assisted",
        category_id=None if category is None else category.pk,
    )
    return mask


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
    accept_mask(image, annotator_user, Category.objects.get(pk=person["id"]))
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
    mask = accept_mask(image, annotator_user, car)
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
    accept_mask(make_images(project, 1)[0], member(project, "ann", "annotator"), car)
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
    accept_mask(make_images(project, 1)[0], annotator_user, car)
    with pytest.raises(CommandError, match=r"1 masks carry category 'car'.*nothing changed"):
        call_command("categories", project.name, "--delete", "person", "CAR", "--add", "bus")
    assert sorted(Category.objects.values_list("name", flat=True)) == ["car", "person"]
    with pytest.raises(CommandError, match="has no category 'tram'"):
        call_command("categories", project.name, "--delete", "tram")
    out = io.StringIO()
    call_command("categories", project.name, "--delete", "car", "--force", stdout=out)
    assert "deleted 'car' (1 masks left without a category)" in out.getvalue()
    assert list(Category.objects.values_list("name", flat=True)) == ["person"]


def test_deleting_a_project_deletes_its_categories_and_leaves_others(project, annotator_user):
    other = Project.objects.create(name="other")
    kept = category_create(project=other, name="car")
    car = category_create(project=project, name="car")
    accept_mask(make_images(project, 1)[0], annotator_user, car)
    project_delete(project=project, confirm=project.name, enqueue=False)
    assert list(Category.objects.all()) == [kept]
    assert not Mask.objects.exists()
