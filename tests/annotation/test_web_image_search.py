"""The project page's image grid searched by file name (any case, part of the name), together
with the status filter and across pages; the links keep the search."""

import pytest
from django.test import Client

from annotation.models import Image
from tests.annotation.test_export import add_image

pytestmark = pytest.mark.django_db


def tiles(html: str) -> int:
    return html.count('class="tile"')


def test_the_grid_keeps_the_images_whose_name_matches(project, admin_user):
    for seed in range(3):
        add_image(project, 40, 30, seed)  # photo_0.png, photo_1.png, photo_2.png
    Image.objects.filter(file_name="photo_2.png").update(file_name="IMG_0042.JPG", status="done")
    client = Client()
    client.force_login(admin_user)
    url = f"/projects/{project.pk}/"
    html = client.get(url, {"name": "PHOTO"}).content.decode()
    assert tiles(html) == 2
    assert "named like “PHOTO”" in html
    assert 'href="?status=done&amp;name=PHOTO"' in html  # the status filter keeps the search
    assert 'name="name" value="PHOTO"' in html
    assert tiles(client.get(url, {"name": "img_00"}).content.decode()) == 1
    html = client.get(url, {"name": "img", "status": "todo"}).content.decode()
    assert tiles(html) == 0
    assert "No image's file name contains “img” with this status." in html
    assert tiles(client.get(url, {"name": "  "}).content.decode()) == 3  # blank: no search


def test_the_pager_keeps_the_search(project, admin_user, monkeypatch):
    from annotation.web import projects

    monkeypatch.setattr(projects, "IMAGES_PER_PAGE", 2)
    for seed in range(5):
        add_image(project, 40, 30, seed)
    client = Client()
    client.force_login(admin_user)
    html = client.get(f"/projects/{project.pk}/", {"name": "photo"}).content.decode()
    assert 'href="?name=photo&amp;page=2"' in html
    page = client.get(f"/projects/{project.pk}/", {"name": "photo", "page": "3"})
    assert tiles(page.content.decode()) == 1
