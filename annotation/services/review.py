"""Review: a reviewer approves, rejects (with a reason) or fixes an accepted mask, approves
the masks of an image at once, or takes their verdicts back (undo).

Every decision records who reviewed and when. A rejected mask keeps its pixels and
provenance but leaves exports and training snapshots, which select accepted masks only.
Decisions can be revised: approving a rejected mask accepts it again.
"""

import datetime as dt
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from annotation.errors import InvalidReview
from annotation.models import Image, Mask
from annotation.services.mask_encoding import mask_encode

REASON_MAX = 500


def _locked(mask: Mask) -> Mask:
    """The mask's row, locked: two reviewers deciding at once apply one after the other."""
    return Mask.objects.select_for_update(of=("self",)).select_related("image").get(pk=mask.pk)


def _reviewed(mask: Mask, *, reviewer: User, now: dt.datetime | None) -> None:
    mask.reviewed_by = reviewer
    mask.reviewed_at = now or timezone.now()


_REVIEW_FIELDS = ["status", "rejection_reason", "reviewed_by", "reviewed_at", "updated_at"]


@transaction.atomic
def mask_reject(*, mask: Mask, reviewer: User, reason: str, now: dt.datetime | None = None) -> Mask:
    """Reject ``mask`` with a reason (1 to 500 characters once trimmed)."""
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise InvalidReview("a rejection needs a reason")
    if len(reason) > REASON_MAX:
        raise InvalidReview(f"the reason is {len(reason)} characters; at most {REASON_MAX}")
    row = _locked(mask)
    row.status = Mask.Status.REJECTED
    row.rejection_reason = reason
    _reviewed(row, reviewer=reviewer, now=now)
    row.save(update_fields=_REVIEW_FIELDS)
    return row


@transaction.atomic
def mask_approve(*, mask: Mask, reviewer: User, now: dt.datetime | None = None) -> Mask:
    """Approve ``mask``: it is (again) accepted and marked reviewed."""
    row = _locked(mask)
    row.status = Mask.Status.ACCEPTED
    row.rejection_reason = ""
    _reviewed(row, reviewer=reviewer, now=now)
    row.save(update_fields=_REVIEW_FIELDS)
    return row


@transaction.atomic
def mask_fix(
    *,
    mask: Mask,
    reviewer: User,
    rle: dict[str, Any] | None = None,
    png: str | None = None,
    now: dt.datetime | None = None,
) -> Mask:
    """Replace the mask's pixels with the reviewer's (``rle`` or ``png``); accepted, reviewed.

    Raises InvalidMask (nothing changed) when the new mask is malformed, of another size or
    empty. The original annotator and provenance stay; ``reviewed_by`` says who fixed it.
    """
    row = _locked(mask)
    encoded = mask_encode(height=row.image.height, width=row.image.width, rle=rle, png=png)
    row.rle_counts = encoded.counts
    row.area = encoded.area
    row.bbox = encoded.bbox
    row.status = Mask.Status.ACCEPTED
    row.rejection_reason = ""
    _reviewed(row, reviewer=reviewer, now=now)
    row.save(update_fields=[*_REVIEW_FIELDS, "rle_counts", "area", "bbox"])
    return row


# An image holds at most a few hundred masks in practice (SA-1B averages about 100).
MAX_MASKS_PER_APPROVAL = 1000


def _image_masks_locked(*, image: Image, mask_ids: list[int], action: str) -> list[Mask]:
    """The listed masks of ``image``, locked, in id order; InvalidReview naming the ids that
    are not its masks (``action`` says what did not happen)."""
    ids = list(dict.fromkeys(mask_ids))
    if not ids or len(ids) > MAX_MASKS_PER_APPROVAL:
        raise InvalidReview(f"name 1 to {MAX_MASKS_PER_APPROVAL} masks of the image")
    rows = list(
        Mask.objects.select_for_update(of=("self",)).filter(image=image, pk__in=ids).order_by("pk")
    )
    missing = sorted(set(ids) - {row.pk for row in rows})
    if missing:
        raise InvalidReview(
            f"not masks of image #{image.pk}: {missing[:10]}; nothing was {action}",
            extra={"missing": missing[:100]},
        )
    return rows


@transaction.atomic
def image_masks_approve(
    *, image: Image, reviewer: User, mask_ids: list[int], now: dt.datetime | None = None
) -> tuple[list[Mask], list[Mask]]:
    """Approve the listed masks of ``image`` at once: ``(approved, unchanged)``.

    The reviewer names the masks they saw, so a mask accepted after the page was loaded is
    never approved unseen. A listed mask that is no longer accepted (a co-reviewer rejected it,
    a prefilled one still proposed) is left as it is and returned in ``unchanged``. Raises
    InvalidReview (nothing changed) for ids that are not masks of ``image``.
    """
    rows = _image_masks_locked(image=image, mask_ids=mask_ids, action="approved")
    approved = [row for row in rows if row.status == Mask.Status.ACCEPTED]
    when = now or timezone.now()
    for row in approved:
        row.rejection_reason = ""
        row.updated_at = when  # bulk_update does not run auto_now
        _reviewed(row, reviewer=reviewer, now=when)
    Mask.objects.bulk_update(approved, _REVIEW_FIELDS)
    return approved, [row for row in rows if row.status != Mask.Status.ACCEPTED]


@transaction.atomic
def image_masks_unreview(
    *, image: Image, reviewer: User, mask_ids: list[int]
) -> tuple[list[Mask], list[Mask]]:
    """Take back the reviewer's own verdicts on the listed masks of ``image`` (the review
    page's Undo): each goes back to the queue, accepted and undecided, ``(returned,
    unchanged)``. A fix keeps its new pixels (only the verdict is taken back). Masks another
    reviewer decided on, or nobody did, are left alone and returned in ``unchanged``. Raises
    InvalidReview (nothing changed) for ids that are not masks of ``image``.
    """
    rows = _image_masks_locked(image=image, mask_ids=mask_ids, action="taken back")
    returned = [row for row in rows if row.reviewed_by_id == reviewer.pk]
    unchanged = [row for row in rows if row.reviewed_by_id != reviewer.pk]
    when = timezone.now()
    for row in returned:
        row.updated_at = when  # bulk_update does not run auto_now
        row.status = Mask.Status.ACCEPTED
        row.rejection_reason = ""
        row.reviewed_by = None
        row.reviewed_at = None
    Mask.objects.bulk_update(returned, _REVIEW_FIELDS)
    return returned, unchanged
