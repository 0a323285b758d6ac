"""The project page's Categories card: everyone sees the categories with their masks; admins
add, rename, recolour and delete them (a category in use only with its box ticked); others
change nothing."""

import pytest

from annotation.models import Category, Mask, Project
from annotation.services.categories import category_create
from annotation.services.masks import mask_accept
from engine.models import Job
from tests.annotation.test_web_members import logged_in
from tests.annotation.workflow import make_images, rle_of, square

pytestmark = pytest.mark.django_db


def _post(client, project, action: str, **data: object) -> str:
    url = f"/projects/{project.pk}/categories/{action}/"
    return client.post(url, data, follow=True).content.decode()


def test_the_card_lists_categories_and_only_admins_get_the_forms(
    project, admin_user, annotator_user
):
    car = category_create(project=project, name="car", color="#ff0000")
    (image,) = make_images(project, 1)
    mask_accept(
        image=image,
        annotator=annotator_user,
        rle=rle_of(square()),
        source="manual",
        category_id=car.pk,
    )
    html = logged_in(annotator_user).get(f"/projects/{project.pk}/").content.decode()
    assert 'data-category="car"' in html
    assert 'data-category-masks="1"' in html
    assert 'id="category-add"' not in html
    html = logged_in(admin_user).get(f"/projects/{project.pk}/").content.decode()
    assert 'id="category-add"' in html
    assert "take it off 1 mask" in html


def test_an_admin_adds_renames_and_deletes_categories(project, admin_user, annotator_user):
    client = logged_in(admin_user)
    text = _post(client, project, "add", name="car")
    assert "Category &#x27;car&#x27; added (COCO id 1)." in text
    text = _post(client, project, "add", name="Car")
    assert "Not added:" in text
    car = Category.objects.get()
    text = _post(client, project, "update", category_id=car.pk, name="truck", color="#00ff00")
    assert "Category &#x27;truck&#x27; saved." in text
    car.refresh_from_db()
    assert (car.name, car.color) == ("truck", "#00ff00")
    (image,) = make_images(project, 1)
    mask, _ = mask_accept(
        image=image,
        annotator=annotator_user,
        rle=rle_of(square()),
        source="manual",
        category_id=car.pk,
    )
    text = _post(client, project, "delete", category_id=car.pk)
    assert "Not deleted: 1 masks carry category" in text
    assert Category.objects.exists()
    text = _post(client, project, "delete", category_id=car.pk, force="on")
    assert "1 masks no longer have a category" in text
    assert not Category.objects.exists()
    assert Mask.objects.get(pk=mask.pk).category_id is None


def test_non_admins_change_nothing(project, annotator_user):
    car = category_create(project=project, name="car")
    client = logged_in(annotator_user)
    for action, data in (
        ("add", {"name": "bus"}),
        ("update", {"category_id": car.pk, "name": "bus"}),
        ("delete", {"category_id": car.pk, "force": "on"}),
    ):
        answer = client.post(f"/projects/{project.pk}/categories/{action}/", data)
        assert answer.status_code == 403
    assert list(Category.objects.values_list("name", flat=True)) == ["car"]


def test_the_export_form_exports_the_ticked_categories(project, admin_user):
    car = category_create(project=project, name="car")
    category_create(project=project, name="bus")
    client = logged_in(admin_user)
    html = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'id="export-categories"' in html
    client.post(f"/projects/{project.pk}/export/", {"format": "coco", "categories": [car.pk]})
    client.post(f"/projects/{project.pk}/export/", {"format": "coco"})
    text = client.post(
        f"/projects/{project.pk}/export/", {"format": "coco", "categories": ["x"]}, follow=True
    ).content.decode()
    assert "Export refused: not categories of project" in text
    exports = Job.objects.filter(kind=Job.Kind.EXPORT).order_by("id")
    assert [job.params["categories"] for job in exports] == [[car.pk], None]


def test_a_category_of_another_project_is_not_touched(project, admin_user):
    other = Project.objects.create(name="other")
    foreign = category_create(project=other, name="car")
    client = logged_in(admin_user)
    for action in ("update", "delete"):
        text = _post(client, project, action, category_id=foreign.pk, name="bus", force="on")
        assert "That category is not in this project any more." in text
    foreign.refresh_from_db()
    assert foreign.name == "car"
