"""Skipping an image (set aside as unusable, with a reason) and reopening done or skipped
images: the services, and what a skip changes for the queue, exports and training rounds."""

import datetime as dt
import io

import pytest
from django.utils import timezone

from annotation.errors import ConflictError, LeaseTaken
from annotation.models import Image, ImageLease, Mask
from annotation.selectors.masks import export_counts
from annotation.services.image_sets import ImagesNotFound
from annotation.services.leases import (
    SKIP_REASON_MAX,
    InvalidImageState,
    image_lease_take,
    image_mark_done,
    image_next_for_user,
    image_skip,
    images_reopen,
)
from annotation.services.masks import mask_create
from annotation.services.projects import project_create
from tests.annotation.workflow import make_images, member, rle_of, square
from training.services.rounds import round_masks

pytestmark = pytest.mark.django_db


def _next_id(project, user) -> int | None:
    lease = image_next_for_user(project=project, user=user)
    return None if lease is None else lease.image.pk


def _state(image: Image) -> tuple[str, str, int | None]:
    image.refresh_from_db()
    return image.status, image.skip_reason, image.skipped_by_id


def test_a_skip_sets_the_image_aside_with_its_reason_and_drops_its_lease(project, annotator_user):
    first, second = make_images(project, 2)
    assert _next_id(project, annotator_user) == first.pk
    before = timezone.now()
    skipped = image_skip(image=first, user=annotator_user, reason="  Blurry,\n too dark  ")
    assert skipped.status == Image.Status.SKIPPED
    assert _state(first) == ("skipped", "Blurry, too dark", annotator_user.pk)
    assert first.skipped_at is not None
    assert first.skipped_at >= before
    assert not ImageLease.objects.filter(image=first).exists()
    # "Next image" goes on with the others and never hands the skipped one out again.
    assert _next_id(project, annotator_user) == second.pk
    image_mark_done(image=second, user=annotator_user)
    assert _next_id(project, annotator_user) is None


@pytest.mark.parametrize("reason", ["", "   \n ", None, 42, ["blurry"]])
def test_a_skip_without_a_reason_is_refused_and_changes_nothing(project, annotator_user, reason):
    (image,) = make_images(project, 1)
    with pytest.raises(InvalidImageState, match="reason is required"):
        image_skip(image=image, user=annotator_user, reason=reason)
    assert _state(image) == ("todo", "", None)


def test_a_reason_longer_than_the_limit_is_refused(project, annotator_user):
    (image,) = make_images(project, 1)
    with pytest.raises(InvalidImageState, match=f"at most {SKIP_REASON_MAX}"):
        image_skip(image=image, user=annotator_user, reason="x" * (SKIP_REASON_MAX + 1))
    assert _state(image) == ("todo", "", None)
    image_skip(image=image, user=annotator_user, reason="x" * SKIP_REASON_MAX)
    assert _state(image)[0] == "skipped"


def test_an_image_another_annotator_holds_cannot_be_skipped(project, annotator_user):
    (image,) = make_images(project, 1)
    other = member(project, "dora", "annotator")
    image_lease_take(image=image, user=other)
    with pytest.raises(LeaseTaken, match="dora"):
        image_skip(image=image, user=annotator_user, reason="duplicate")
    assert _state(image) == ("todo", "", None)
    # Once that lease has run out, the skip goes through.
    ImageLease.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    image_skip(image=image, user=annotator_user, reason="duplicate")
    assert _state(image) == ("skipped", "duplicate", annotator_user.pk)


def test_only_reviewers_may_skip_a_done_image(project, annotator_user):
    (image,) = make_images(project, 1)
    image_mark_done(image=image, user=annotator_user)
    with pytest.raises(ConflictError, match="is done"):
        image_skip(image=image, user=annotator_user, reason="out of scope")
    assert _state(image) == ("done", "", None)
    reviewer = member(project, "rita", "reviewer")
    image_skip(image=image, user=reviewer, reason="out of scope", may_skip_done=True)
    assert _state(image) == ("skipped", "out of scope", reviewer.pk)


def test_skipping_again_updates_the_reason_and_done_clears_it(project, annotator_user):
    (image,) = make_images(project, 1)
    image_skip(image=image, user=annotator_user, reason="blurry")
    image_skip(image=image, user=annotator_user, reason="duplicate of #3")
    assert _state(image) == ("skipped", "duplicate of #3", annotator_user.pk)
    image_mark_done(image=image, user=annotator_user)
    assert _state(image) == ("done", "", None)
    image.refresh_from_db()
    assert image.skipped_at is None


def test_masks_of_a_skipped_image_stay_out_of_exports_and_rounds_until_it_is_reopened(
    project, annotator_user
):
    kept, skipped = make_images(project, 2)
    for image in (kept, skipped):
        for _ in range(2):
            mask_create(image=image, rle=rle_of(square()), source=Mask.Source.MANUAL)
    assert export_counts(project=project) == (2, 4)
    image_skip(image=skipped, user=annotator_user, reason="blurry")
    assert export_counts(project=project) == (1, 2)
    assert set(round_masks(project).values_list("image_id", flat=True)) == {kept.pk}
    assert Mask.objects.filter(image=skipped).count() == 2  # kept, only left out
    assert images_reopen(project=project, image_ids=[skipped.pk]) == 1
    assert export_counts(project=project) == (2, 4)
    assert set(round_masks(project).values_list("image_id", flat=True)) == {kept.pk, skipped.pk}


def test_reopen_puts_done_and_skipped_images_back_in_the_queue(project, annotator_user):
    done, skipped, todo = make_images(project, 3)
    image_mark_done(image=done, user=annotator_user)
    image_skip(image=skipped, user=annotator_user, reason="blurry")
    assert _next_id(project, annotator_user) == todo.pk
    image_mark_done(image=todo, user=annotator_user)
    assert images_reopen(project=project, image_ids=[done.pk, skipped.pk, skipped.pk]) == 2
    assert _state(done) == ("todo", "", None)
    assert _state(skipped) == ("todo", "", None)
    assert skipped.skipped_at is None
    assert _next_id(project, annotator_user) == done.pk
    # A todo image is left as it is and not counted.
    assert images_reopen(project=project, image_ids=[done.pk]) == 0


def test_reopen_refuses_ids_of_another_project_and_changes_nothing(
    project, admin_user, annotator_user
):
    (mine,) = make_images(project, 1)
    image_mark_done(image=mine, user=annotator_user)
    other = project_create(name="elsewhere", creator=admin_user)
    (theirs,) = make_images(other, 1)
    with pytest.raises(ImagesNotFound, match=str(theirs.pk)):
        images_reopen(project=project, image_ids=[mine.pk, theirs.pk])
    assert _state(mine)[0] == "done"


@pytest.mark.parametrize("ids", [[], "1,2", [0], [True], [1.5], list(range(1, 10_002))])
def test_reopen_refuses_a_malformed_id_list(project, ids):
    make_images(project, 1)
    with pytest.raises(InvalidImageState):
        images_reopen(project=project, image_ids=ids)
    assert Image.objects.filter(status=Image.Status.TODO).count() == 1


def test_the_reopen_command_takes_ids_or_every_skipped_or_done_image(project, annotator_user):
    from django.core.management import CommandError, call_command

    done, skipped, other_skipped, todo = make_images(project, 4)
    image_mark_done(image=done, user=annotator_user)
    for image in (skipped, other_skipped):
        image_skip(image=image, user=annotator_user, reason="blurry")
    with pytest.raises(CommandError, match="give image ids"):
        call_command("reopen_images", project.name)
    with pytest.raises(CommandError, match=r"not images of project.*999999"):
        call_command("reopen_images", project.name, str(skipped.pk), "999999")
    assert _state(skipped)[0] == "skipped"
    out = io.StringIO()
    call_command("reopen_images", project.name, str(todo.pk), "--skipped", stdout=out)
    assert "reopened 2 images (1 were already todo)" in out.getvalue()
    states = [_state(image)[0] for image in (done, skipped, other_skipped)]
    assert states == ["done", "todo", "todo"]
    call_command("reopen_images", str(project.pk), "--done", stdout=out)
    assert _state(done)[0] == "todo"
