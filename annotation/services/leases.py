"""Image leases: "next image" hands each image to one annotator at a time, for a while.

An annotator *holds* an image while their ``ImageLease`` row for it has not expired
(``MASKLOOP_LEASE_SECONDS`` after it was taken or last renewed). Every service that writes a
lease of an image first locks that image's row (``SELECT ... FOR UPDATE``) and then reads the
leases with a fresh statement, so two writers of one image run one after the other and the
second sees what the first committed: at most one user holds an image at any time.

"Next image" picks its candidate with ``FOR UPDATE SKIP LOCKED``, so concurrent callers do not
queue behind each other on the same row: each skips the images another caller is claiming at
that moment and takes the next one. A candidate that turns out to be held (its lease was
committed after the candidate query started) is passed over and the next one tried.

An image leaves the queue when an annotator marks it done (:func:`image_mark_done`) or sets it
aside as unusable (:func:`image_skip`, with a reason); a reviewer puts done or skipped images
back (:func:`images_reopen`).
"""

import datetime as dt
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from annotation.errors import ConflictError, DomainError, LeaseExpired, LeaseTaken
from annotation.models import Image, ImageLease, Project
from annotation.services.image_sets import id_chunks, image_ids_checked, project_images_or_404

SKIP_REASON_MAX = 500
_SKIP_FIELDS = ["status", "skip_reason", "skipped_by", "skipped_at"]


class InvalidImageState(DomainError):
    """A skip or reopen request that is malformed (no reason, a bad id list)."""

    code = "invalid_image_state"


def lease_seconds() -> int:
    return int(settings.MASKLOOP_LEASE_SECONDS)


def _lock_image(image_id: int) -> Image:
    """Lock the image row for the rest of the transaction: serialises its lease writes."""
    return Image.objects.select_for_update(of=("self",)).select_related("project").get(pk=image_id)


def _holder(image_id: int, now: dt.datetime) -> ImageLease | None:
    """The unexpired lease of the image, if anyone holds it (at most one row, see above)."""
    return (
        ImageLease.objects.select_related("user")
        .filter(image_id=image_id, expires_at__gt=now)
        .order_by("-expires_at")
        .first()
    )


def _hold(*, image: Image, user: User, now: dt.datetime) -> ImageLease:
    """Give or renew ``user``'s lease; the caller has locked the image and checked the holder."""
    lease, _ = ImageLease.objects.update_or_create(
        image=image,
        user=user,
        defaults={"expires_at": now + dt.timedelta(seconds=lease_seconds())},
    )
    lease.image = image
    return lease


def _taken(image: Image, holder: ImageLease) -> LeaseTaken:
    """The message names a time to the second in UTC; ``expires_at`` and ``holder`` let a client
    say it in its own words and time zone (the tool does)."""
    name = holder.user.get_username()
    until = holder.expires_at.astimezone(dt.UTC)
    return LeaseTaken(
        f"image #{image.pk} is being annotated by {name} until {until:%Y-%m-%d %H:%M:%S} UTC",
        extra={"expires_at": holder.expires_at.isoformat(), "holder": name},
    )


@transaction.atomic
def image_lease_take(*, image: Image, user: User, now: dt.datetime | None = None) -> ImageLease:
    """Take or renew ``user``'s lease on ``image``; LeaseTaken if someone else holds it."""
    now = now or timezone.now()
    locked = _lock_image(image.pk)
    holder = _holder(locked.pk, now)
    if holder is not None and holder.user_id != user.pk:
        raise _taken(locked, holder)
    return _hold(image=locked, user=user, now=now)


@transaction.atomic
def image_lease_release(*, image: Image, user: User) -> None:
    """Drop ``user``'s lease on ``image`` (expired or not); another user's lease stays."""
    ImageLease.objects.filter(image=image, user=user).delete()


@transaction.atomic
def image_next_for_user(
    *,
    project: Project,
    user: User,
    skip: Iterable[int] = (),
    now: dt.datetime | None = None,
) -> ImageLease | None:
    """Lease the next image needing work to ``user``; None when there is none.

    The caller's own unexpired lease in ``project`` comes first (resumed and renewed); else the
    lowest-id ``todo`` image that nobody else holds. ``skip`` lists images the caller passed
    over: they are not handed out, and the caller's leases on them are released.
    """
    now = now or timezone.now()
    skipped = set(skip)
    if skipped:
        ImageLease.objects.filter(user=user, image__project=project, image_id__in=skipped).delete()
    own = (
        ImageLease.objects.filter(
            user=user,
            image__project=project,
            image__status=Image.Status.TODO,
            expires_at__gt=now,
        )
        .order_by("image_id")
        .values_list("image_id", flat=True)
        .first()
    )
    if own is not None:
        locked = _lock_image(own)
        holder = _holder(locked.pk, now)
        if holder is None or holder.user_id == user.pk:
            return _hold(image=locked, user=user, now=now)
    held_by_others = ImageLease.objects.filter(image=OuterRef("pk"), expires_at__gt=now).exclude(
        user=user
    )
    passed_over: set[int] = set()
    while True:
        candidate = (
            Image.objects.filter(project=project, status=Image.Status.TODO)
            .exclude(pk__in=skipped | passed_over)
            .exclude(Exists(held_by_others))
            .order_by("id")
            .select_for_update(skip_locked=True)
            .first()
        )
        if candidate is None:
            return None
        # A fresh statement after the lock: sees a lease committed since the query began.
        holder = _holder(candidate.pk, now)
        if holder is None or holder.user_id == user.pk:
            candidate.project = project
            return _hold(image=candidate, user=user, now=now)
        passed_over.add(candidate.pk)


def lease_check_holder(*, image: Image, user: User, now: dt.datetime | None = None) -> None:
    """LeaseTaken when a user other than ``user`` holds ``image`` now (nothing is written)."""
    holder = _holder(image.pk, now or timezone.now())
    if holder is not None and holder.user_id != user.pk:
        raise _taken(image, holder)


@transaction.atomic
def image_mark_done(*, image: Image, user: User, now: dt.datetime | None = None) -> Image:
    """Set the image's status to done and drop its leases; LeaseTaken if another user holds it.

    Semi-automatic stage: the image's prefilled masks still ``proposed`` become ``accepted`` in
    the same transaction (the annotator saw them in the tool and did not reject them).
    """
    # Imported here: the semi-automatic services use the lease check above.
    from annotation.services.semi_automatic import prefill_accept_for_image

    now = now or timezone.now()
    locked = _lock_image(image.pk)
    holder = _holder(locked.pk, now)
    if holder is not None and holder.user_id != user.pk:
        raise _taken(locked, holder)
    if locked.status != Image.Status.DONE:
        locked.status = Image.Status.DONE
        locked.skip_reason, locked.skipped_by, locked.skipped_at = "", None, None
        locked.save(update_fields=_SKIP_FIELDS)
    prefill_accept_for_image(image=locked)
    ImageLease.objects.filter(image=locked).delete()
    return locked


@transaction.atomic
def lease_renew_for_accept(*, image: Image, user: User, now: dt.datetime | None = None) -> None:
    """The lease rule of an accept: renew the caller's lease, refuse a lease lost to another.

    - no lease row of the caller on the image: nothing to check (scripts, a second annotator
      helping on an image) and nothing taken;
    - the caller's lease is unexpired, or expired with nobody else holding the image: renewed;
    - the caller's lease expired and another user holds the image now: LeaseExpired.
    """
    now = now or timezone.now()
    if not ImageLease.objects.filter(image=image, user=user).exists():
        return
    locked = _lock_image(image.pk)
    holder = _holder(locked.pk, now)
    if holder is not None and holder.user_id != user.pk:
        raise LeaseExpired(
            f"your lease on image #{image.pk} expired and {holder.user.get_username()} holds "
            f"the image now (until {holder.expires_at.isoformat()}); the mask was not stored",
            extra={"expires_at": holder.expires_at.isoformat()},
        )
    _hold(image=locked, user=user, now=now)


def skip_reason_checked(reason: object) -> str:
    """The reason of a skip, stripped; InvalidImageState when it is missing or too long."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidImageState("say why the image is skipped: a reason is required")
    text = " ".join(reason.split())  # one line: it is shown in tooltips and lists
    if len(text) > SKIP_REASON_MAX:
        raise InvalidImageState(
            f"the reason is {len(text)} characters long: at most {SKIP_REASON_MAX}"
        )
    return text


@transaction.atomic
def image_skip(
    *,
    image: Image,
    user: User,
    reason: object,
    may_skip_done: bool = False,
    now: dt.datetime | None = None,
) -> Image:
    """Set ``image`` aside as unusable: status ``skipped`` with the reason, who and when, its
    leases dropped. Its masks stay, out of exports and rounds while it is skipped.

    Raises InvalidImageState (no reason / too long), LeaseTaken when another user holds the
    image, ConflictError for a done image unless ``may_skip_done`` (reviewers: an annotator
    cannot take back another's finished work). Skipping a skipped image updates the reason.
    """
    text = skip_reason_checked(reason)
    now = now or timezone.now()
    locked = _lock_image(image.pk)
    holder = _holder(locked.pk, now)
    if holder is not None and holder.user_id != user.pk:
        raise _taken(locked, holder)
    if locked.status == Image.Status.DONE and not may_skip_done:
        raise ConflictError(
            f"image #{locked.pk} is done; a reviewer can skip it or reopen it for more work"
        )
    locked.status = Image.Status.SKIPPED
    locked.skip_reason, locked.skipped_by, locked.skipped_at = text, user, now
    locked.save(update_fields=_SKIP_FIELDS)
    ImageLease.objects.filter(image=locked).delete()
    return locked


@transaction.atomic
def images_reopen(*, project: Project, image_ids: object) -> int:
    """Put ``image_ids`` of ``project`` (done or skipped) back to ``todo``, where "next image"
    hands them out again; their masks are kept. Returns how many changed (todo ones do not).

    Raises InvalidImageState for a malformed list and ImagesNotFound (404) naming ids that are
    not images of the project; nothing is changed then. The caller checks the reviewer role.
    """
    ids = image_ids_checked(image_ids, refused=InvalidImageState)
    found = project_images_or_404(
        Image.objects.filter(project=project).select_for_update().only("pk", "status"),
        project=project,
        ids=ids,
        action="reopened",
    )
    changed = [pk for pk, image in found.items() if image.status != Image.Status.TODO]
    for chunk in id_chunks(changed):
        Image.objects.filter(pk__in=chunk).update(
            status=Image.Status.TODO, skip_reason="", skipped_by=None, skipped_at=None
        )
    return len(changed)
