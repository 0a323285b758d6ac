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
"""

import datetime as dt
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from annotation.errors import LeaseExpired, LeaseTaken
from annotation.models import Image, ImageLease, Project


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
        locked.save(update_fields=["status"])
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
