"""``manage.py seed_demo``: an admin and a demo project with exact masks, created once."""

import io
import re

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import override_settings
from pycocotools import mask as mask_utils

from annotation.management.commands.seed_demo import demo_image
from annotation.models import Image, Mask, Project

pytestmark = pytest.mark.django_db

LOGIN_LINE = re.compile(r"Log in at http://127\.0\.0\.1:8000/ as (\S+) / (\S+)")


def credentials(output: str) -> tuple[str, str]:
    found = LOGIN_LINE.search(output)
    assert found is not None, output
    return found.group(1), found.group(2)


def seed(var_dir, images: int = 5) -> str:
    out = io.StringIO()
    with override_settings(VAR_DIR=var_dir):
        call_command("seed_demo", "--images", str(images), stdout=out)
    return out.getvalue()


@pytest.fixture
def var_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    return tmp_path / "var"


def test_seeding_creates_an_admin_whose_printed_password_works(var_dir):
    username, password = credentials(seed(var_dir))
    user = User.objects.get(username=username)
    assert user.is_superuser
    assert user.check_password(password)
    assert (var_dir / "demo-admin.txt").read_text().split() == [username, password]


def test_seeding_creates_the_demo_project_with_images_and_accepted_manual_masks(var_dir):
    seed(var_dir)
    project = Project.objects.get(name="demo")
    assert project.images.count() == 5
    masks = Mask.objects.filter(project=project)
    assert masks.count() >= 5 * 3
    assert set(masks.values_list("status", "source").distinct()) == {("accepted", "manual")}
    assert project.memberships.get().role == "admin"


def test_each_stored_mask_is_the_exact_visible_region_of_its_shape(var_dir):
    seed(var_dir, images=2)
    for index in range(2):
        expected = demo_image(index)
        image = Image.objects.get(file_name=expected.file_name)
        stored = [
            mask_utils.decode(m.rle).astype(bool)
            for m in Mask.objects.filter(image=image).order_by("id")
        ]
        assert len(stored) == len(expected.masks)
        for got, want in zip(stored, expected.masks, strict=True):
            assert np.array_equal(got, want)


def test_running_it_twice_creates_nothing_new_and_prints_the_same_credentials(var_dir):
    first = seed(var_dir)
    counts = (
        User.objects.count(),
        Project.objects.count(),
        Image.objects.count(),
        Mask.objects.count(),
    )
    second = seed(var_dir)
    assert (
        User.objects.count(),
        Project.objects.count(),
        Image.objects.count(),
        Mask.objects.count(),
    ) == counts
    assert credentials(first) == credentials(second)
    assert "(0 new)" in second


def test_the_generated_images_are_the_same_bytes_every_time():
    assert demo_image(3).data == demo_image(3).data
    assert demo_image(3).data != demo_image(4).data
