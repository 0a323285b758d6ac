"""create_project, add_member and import_images as an admin runs them."""

import io
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from annotation.models import Image, Membership, Project
from engine.models import Job
from tests.annotation.test_imaging import jpeg_bytes, png_bomb
from tests.factories import manage_in_child
from tests.s3server import s3_test_client

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def make_folder(root: Path, count: int, *, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"{i:03d}.jpg").write_bytes(jpeg_bytes(40, 30, seed=seed + i))
    return root


# --- create_project ----------------------------------------------------------------------


def test_create_project_creates_it_with_the_given_admin(admin_user):
    out, _ = run("create_project", "Streets", "--description", "city", "--admin", "alice")
    project = Project.objects.get(name="Streets")
    assert out.strip() == f"created project 'Streets' (id {project.pk}, admin alice)"
    assert project.description == "city"
    assert Membership.objects.get(project=project).user == admin_user


def test_create_project_with_an_unknown_admin_fails_and_creates_nothing():
    with pytest.raises(CommandError, match="unknown user 'nobody'"):
        run("create_project", "Streets", "--admin", "nobody")
    assert Project.objects.count() == 0


def test_create_project_with_a_taken_name_fails():
    run("create_project", "Streets")
    with pytest.raises(CommandError, match="'Streets' already exists"):
        run("create_project", "Streets")
    assert Project.objects.count() == 1


# --- add_member --------------------------------------------------------------------------


@pytest.fixture
def project() -> Project:
    return Project.objects.create(name="proj")


def test_add_member_gives_an_existing_user_a_role(project, annotator_user):
    out, _ = run("add_member", "proj", "bob", "--role", "annotator")
    assert out.strip() == "bob is annotator of project 'proj'"
    assert Membership.objects.get(project=project, user=annotator_user).role == "annotator"


def test_add_member_accepts_the_project_id_and_changes_a_role(project, annotator_user):
    run("add_member", "proj", "bob", "--role", "annotator")
    run("add_member", str(project.pk), "bob", "--role", "reviewer")
    assert Membership.objects.get(project=project, user=annotator_user).role == "reviewer"


def test_add_member_creates_a_user_with_the_given_password(project):
    run(
        "add_member",
        "proj",
        "carol",
        "--role",
        "admin",
        "--create-user",
        "--password",
        "c-a-r-o-l-99",
    )
    assert authenticate(username="carol", password="c-a-r-o-l-99") is not None
    assert Membership.objects.get(project=project, user__username="carol").role == "admin"


def test_add_member_prints_a_generated_password_that_works(project):
    out, _ = run("add_member", "proj", "dave", "--role", "annotator", "--create-user")
    first = out.splitlines()[0]
    assert first.startswith("created user 'dave' with password ")
    password = first.rsplit(" ", 1)[1]
    assert authenticate(username="dave", password=password) is not None


def test_add_member_refuses_a_weak_password_and_creates_no_user(project):
    with pytest.raises(CommandError, match="too short"):
        run("add_member", "proj", "erin", "--role", "annotator", "--create-user", "--password", "x")
    assert not User.objects.filter(username="erin").exists()


def test_add_member_for_an_unknown_user_needs_create_user(project):
    with pytest.raises(CommandError, match="pass --create-user"):
        run("add_member", "proj", "frank", "--role", "annotator")
    assert Membership.objects.count() == 0


def test_add_member_to_an_unknown_project_fails(annotator_user):
    with pytest.raises(CommandError, match="unknown project 'nope'"):
        run("add_member", "nope", "bob", "--role", "annotator")
    assert Membership.objects.count() == 0


# --- import_images -----------------------------------------------------------------------


def test_import_images_prints_the_summary_and_shows_progress(project, tmp_path):
    source = make_folder(tmp_path / "src", 30)
    out, err = run("import_images", "proj", str(source))
    assert out.splitlines() == ["imported 30, duplicate 0, rejected 0"]
    assert "30/30" in err  # the tqdm bar
    assert Image.objects.filter(project=project).count() == 30
    assert Job.objects.get().result["imported"] == 30


def test_import_images_again_reports_duplicates_and_adds_nothing(project, tmp_path):
    source = make_folder(tmp_path / "src", 5)
    run("import_images", "proj", str(source))
    out, _ = run("import_images", str(project.pk), str(source))
    assert out.splitlines() == ["imported 0, duplicate 5, rejected 0"]
    assert Image.objects.count() == 5


def test_import_images_lists_rejected_files_and_fails(project, tmp_path):
    source = make_folder(tmp_path / "src", 3)
    (source / "empty.jpg").write_bytes(b"")
    (source / "notes.png").write_text("hello")
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"2 file\(s\) rejected"):
        call_command("import_images", "proj", str(source), "--no-progress", stdout=out)
    assert out.getvalue().splitlines() == [
        "imported 3, duplicate 0, rejected 2",
        "  empty.jpg: empty file (0 bytes)",
        "  notes.png: not an image (no JPEG, PNG, WebP or TIFF header could be read)",
    ]
    assert Image.objects.count() == 3


def test_import_images_into_an_unknown_project_fails_and_changes_nothing(tmp_path):
    source = make_folder(tmp_path / "src", 2)
    with pytest.raises(CommandError, match="unknown project 'ghost'"):
        run("import_images", "ghost", str(source))
    assert (Image.objects.count(), Job.objects.count()) == (0, 0)


def test_import_images_from_a_missing_folder_fails_clearly(project, tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        run("import_images", "proj", str(tmp_path / "missing"))
    assert Job.objects.count() == 0


def test_a_source_that_is_not_a_folder_prints_its_error_without_a_progress_bar(project, tmp_path):
    (tmp_path / "one.png").write_bytes(jpeg_bytes())
    err = io.StringIO()
    with pytest.raises(CommandError, match="is not a folder"):
        call_command("import_images", "proj", str(tmp_path / "one.png"), stderr=err)
    assert err.getvalue() == ""


def test_import_images_from_an_s3_prefix(project, s3_endpoint, s3_bucket):
    client = s3_test_client(s3_endpoint)
    for i in range(8):
        client.put_object(Bucket=s3_bucket, Key=f"photos/{i}.jpg", Body=jpeg_bytes(seed=i))
    client.put_object(Bucket=s3_bucket, Key="photos/../escape.jpg", Body=jpeg_bytes(seed=9))
    out = io.StringIO()
    with (
        override_settings(S3_ENDPOINT_URL=s3_endpoint, S3_MAX_ATTEMPTS=2),
        pytest.raises(CommandError, match=r"1 file\(s\) rejected"),
    ):
        call_command(
            "import_images", "proj", f"s3://{s3_bucket}/photos", stdout=out, stderr=io.StringIO()
        )
    lines = out.getvalue().splitlines()
    assert lines[0] == "imported 8, duplicate 0, rejected 1"
    assert lines[1].startswith("  ../escape.jpg: unsafe key")
    assert Image.objects.count() == 8


# --- the real process exit code ------------------------------------------------------------


def manage(*args: str, blob_root: Path) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a child process against this test's (committed) database."""
    env = {
        "BLOB_ROOT": str(blob_root),
        "MASKLOOP_MAX_IMAGE_BYTES": str(settings.MASKLOOP_MAX_IMAGE_BYTES),
    }
    return manage_in_child(*args, env=env)


@pytest.mark.django_db(transaction=True)
def test_exit_code_is_non_zero_when_a_file_is_rejected(tmp_path):
    Project.objects.create(name="exit-codes")
    source = make_folder(tmp_path / "src", 2)
    (source / "zero.jpg").write_bytes(b"")
    done = manage("import_images", "exit-codes", str(source), blob_root=tmp_path / "blobs")
    assert done.returncode == 1
    assert done.stdout.splitlines()[:2] == [
        "imported 2, duplicate 0, rejected 1",
        "  zero.jpg: empty file (0 bytes)",
    ]
    assert "CommandError: 1 file(s) rejected" in done.stderr
    assert Image.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_exit_code_is_zero_when_everything_was_imported(tmp_path):
    Project.objects.create(name="exit-codes")
    source = make_folder(tmp_path / "src", 2)
    done = manage("import_images", "exit-codes", str(source), blob_root=tmp_path / "blobs")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported 2, duplicate 0, rejected 0"
    assert len(list((tmp_path / "blobs" / "images").iterdir())) == 2


@pytest.mark.django_db(transaction=True)
def test_exit_code_is_non_zero_for_an_unknown_project(tmp_path):
    source = make_folder(tmp_path / "src", 1)
    done = manage("import_images", "ghost", str(source), blob_root=tmp_path / "blobs")
    assert done.returncode == 1
    assert "unknown project 'ghost'" in done.stderr
    assert not (tmp_path / "blobs").exists()


@pytest.mark.django_db(transaction=True)
def test_a_refused_bomb_prints_no_pillow_warning(tmp_path):
    """Pillow's own bomb warning (above its 89 Mpx) is left to our limit: only the rejection
    line is printed, from every import thread."""
    Project.objects.create(name="bombs")
    source = make_folder(tmp_path / "src", 3)
    (source / "bomb.png").write_bytes(png_bomb(20_000, 10_000))
    done = manage("import_images", "bombs", str(source), blob_root=tmp_path / "blobs")
    assert done.returncode == 1
    assert "bomb.png: " in done.stdout
    assert "DecompressionBombWarning" not in done.stderr, done.stderr
