"""The page of masks sent back by review (/projects/<id>/sent-back/): annotators see their own
rejected masks with the reason, reviewers everyone's; prefilled masks rejected in the tool and
masks of skipped images are not listed; the project page links to it with a count."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from annotation.models import Image, Mask
from annotation.services.leases import image_skip
from annotation.services.mask_edit import mask_edit
from annotation.services.masks import mask_create
from annotation.services.review import mask_reject
from tests.annotation.workflow import make_images, member, rle_of, square

pytestmark = pytest.mark.django_db


def _logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _page(user: User, project, query: str = "") -> tuple[int, str]:
    answer = _logged_in(user).get(f"/projects/{project.pk}/sent-back/{query}")
    return answer.status_code, answer.content.decode()


def _rejected(image: Image, annotator: User | None, reviewer: User, reason: str, **kw) -> Mask:
    mask = mask_create(
        image=image, rle=rle_of(square()), source="assisted", annotator=annotator, **kw
    )
    return mask_reject(mask=mask, reviewer=reviewer, reason=reason)


def test_annotators_see_their_own_rejected_masks_with_the_reason(project, annotator_user):
    first, second = make_images(project, 2)
    reviewer = member(project, "rita", "reviewer")
    dora = member(project, "dora", "annotator")
    mine = _rejected(first, annotator_user, reviewer, "misses the handle")
    theirs = _rejected(first, dora, reviewer, "two cups in one mask")
    accepted = mask_create(
        image=first, rle=rle_of(square()), source="assisted", annotator=annotator_user
    )
    prefill = mask_create(
        image=first, rle=rle_of(square()), source="prefill", status=Mask.Status.PROPOSED
    )
    mask_reject(mask=prefill, reviewer=annotator_user, reason="prefilled mask rejected")
    skipped = _rejected(second, annotator_user, reviewer, "blurry anyway")
    image_skip(image=second, user=annotator_user, reason="blurry")

    status, page = _page(annotator_user, project)
    assert status == 200
    assert f'data-mask-id="{mine.pk}"' in page
    assert "misses the handle" in page
    assert f"?image={first.pk}&amp;mask={mine.pk}" in page  # the Fix in the tool link
    for hidden in (theirs, accepted, prefill, skipped):
        assert f'data-mask-id="{hidden.pk}"' not in page
    # ?annotator= is for reviewers: an annotator still sees only their own.
    assert (
        f'data-mask-id="{theirs.pk}"'
        not in _page(annotator_user, project, f"?annotator={dora.pk}")[1]
    )


def test_reviewers_see_everyones_and_can_narrow_to_one_annotator(project, annotator_user):
    (image,) = make_images(project, 1)
    reviewer = member(project, "rita", "reviewer")
    dora = member(project, "dora", "annotator")
    mine = _rejected(image, annotator_user, reviewer, "misses the handle")
    theirs = _rejected(image, dora, reviewer, "two cups in one mask")
    status, page = _page(reviewer, project)
    assert status == 200
    assert page.index(f'data-mask-id="{theirs.pk}"') < page.index(f'data-mask-id="{mine.pk}"')
    _, narrowed = _page(reviewer, project, f"?annotator={dora.pk}")
    assert f'data-mask-id="{theirs.pk}"' in narrowed
    assert f'data-mask-id="{mine.pk}"' not in narrowed
    assert "show everyone" in narrowed


def test_outsiders_get_404_and_an_empty_list_says_so(project, annotator_user, outsider_user):
    assert _page(outsider_user, project)[0] == 404
    status, page = _page(annotator_user, project)
    assert (status, "Nothing was sent back." in page) == (200, True)


def test_the_project_page_links_to_it_with_a_count(project, annotator_user):
    (image,) = make_images(project, 1)
    client = _logged_in(annotator_user)
    assert 'id="sent-back-link"' not in client.get(f"/projects/{project.pk}/").content.decode()
    reviewer = member(project, "rita", "reviewer")
    _rejected(image, annotator_user, reviewer, "misses the handle")
    _rejected(image, member(project, "dora", "annotator"), reviewer, "leaks")
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Sent back to you" in page
    assert '<span class="badge" data-count="sent-back">1</span>' in page
    page = _logged_in(reviewer).get(f"/projects/{project.pk}/").content.decode()
    assert '<span class="badge" data-count="sent-back">2</span>' in page


def test_a_resubmitted_mask_shows_its_earlier_reason_in_the_review_queue(project, annotator_user):
    (image,) = make_images(project, 1)
    reviewer = member(project, "rita", "reviewer")
    mask = _rejected(image, annotator_user, reviewer, "misses the handle")
    mask_edit(mask=mask, user=annotator_user, rle=rle_of(square(x0=5)))
    assert f'data-mask-id="{mask.pk}"' not in _page(annotator_user, project)[1]  # not sent back
    queue = _logged_in(reviewer).get(f"/projects/{project.pk}/review/").content.decode()
    assert "Sent back before: “misses the handle”; fixed and resubmitted." in queue


def test_the_tool_page_links_to_the_annotators_sent_back_masks(project, annotator_user):
    (image,) = make_images(project, 1)
    client = _logged_in(annotator_user)
    assert (
        'id="tool-sent-back"'
        not in client.get(f"/projects/{project.pk}/annotate/").content.decode()
    )
    _rejected(image, annotator_user, member(project, "rita", "reviewer"), "misses the handle")
    page = client.get(f"/projects/{project.pk}/annotate/").content.decode()
    assert f'href="/projects/{project.pk}/sent-back/" id="tool-sent-back"' in page
    assert "1 sent back to you" in page
