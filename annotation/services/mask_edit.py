"""Editing a mask in the tool: new pixels for an existing mask, kept under its id.

An annotator fixes a mask they accepted earlier (on this image or, through *Previous*, on one
they finished) without deleting it and starting over, or fixes one a reviewer rejected and
resubmits it; reviewers and admins may edit any mask of their project. The effort of the edit
adds to the mask's clicks, brush strokes and active seconds, so the statistics count what the
mask really cost. The mask needs review again.
"""

import datetime as dt
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from annotation.errors import ConflictError
from annotation.models import Image, Mask
from annotation.services.categories import mask_category
from annotation.services.leases import lease_renew_for_accept
from annotation.services.mask_encoding import check_count, check_number, mask_encode
from annotation.services.masks import MAX_COUNT, MAX_SECONDS, require_owner_or_reviewer
from annotation.services.semi_automatic import prefill_mask_relabel

# ``category`` not given: the mask keeps its own (None would take it off).
UNCHANGED: Any = object()


def _editable(mask: Mask, *, user: User) -> None:
    """What may be edited (accepted masks, and masks a reviewer rejected, of images not
    skipped), and by whom (the mask's annotator, or a reviewer or admin of the project)."""
    if mask.source == Mask.Source.PREFILL and mask.status != Mask.Status.ACCEPTED:
        raise ConflictError(
            f"mask #{mask.pk} is a {mask.status} prefilled mask: reject a wrong one and draw "
            "the object anew (a rejected one comes back with prefill-restore)"
        )
    if mask.status not in (Mask.Status.ACCEPTED, Mask.Status.REJECTED):
        raise ConflictError(f"mask #{mask.pk} is {mask.status}: it cannot be edited")
    if mask.image.status == Image.Status.SKIPPED:
        raise ConflictError(
            f"image #{mask.image_id} is skipped: a reviewer must reopen it before its masks "
            "are edited"
        )
    require_owner_or_reviewer(mask=mask, user=user, action="edit")


@transaction.atomic
def mask_edit(
    *,
    mask: Mask,
    user: User,
    rle: dict[str, Any] | None = None,
    png: str | None = None,
    clicks: int = 0,
    brush_strokes: int = 0,
    seconds_spent: float = 0.0,
    category: int | None = UNCHANGED,
    now: dt.datetime | None = None,
) -> Mask:
    """Replace ``mask``'s pixels (``rle`` or ``png``, of the image's size) with the user's edit,
    and/or its category (a category id of the project, or None to take it off; the pixels may
    be left out when the category is given: a relabel is an edit too).

    ``clicks``, ``brush_strokes`` and ``seconds_spent`` are the edit's own effort; they are
    added to the mask's (a mask stored without them counts from 0). The annotator, source,
    model version and prompts of the accept stay; ``edit_count``, ``edited_by`` and
    ``edited_at`` record the edit, and the review is cleared (the mask goes back to the queue).
    A mask a reviewer rejected is thereby fixed and resubmitted: it is accepted again, and its
    ``rejection_reason`` stays until the next review, so the reviewer sees what was wrong.

    A relabel alone of a proposed prefilled mask (semi-automatic stage) sets its category and
    nothing else (see :func:`prefill_mask_relabel`).

    Refused with nothing changed: PermissionDenied (another annotator's mask), ConflictError
    (a prefilled mask not accepted, a skipped image), InvalidMask (malformed, empty or
    wrong-sized pixels, out-of-range counts), LeaseExpired (the lease rule of an accept).
    """
    row = (
        Mask.objects.select_for_update(of=("self",))
        .select_related("image", "project")
        .get(pk=mask.pk)
    )
    relabel_only = category is not UNCHANGED and rle is None and png is None
    if relabel_only and row.source == Mask.Source.PREFILL and row.status == Mask.Status.PROPOSED:
        # The model's proposal gets the label it will be accepted with; it is not an edit.
        return prefill_mask_relabel(mask=row, user=user, category_id=category, now=now)
    _editable(row, user=user)
    clicks = check_count(clicks, name="clicks", high=MAX_COUNT)
    brush_strokes = check_count(brush_strokes, name="brush_strokes", high=MAX_COUNT)
    seconds = check_number(seconds_spent, name="seconds_spent", low=0.0, high=MAX_SECONDS)
    if not relabel_only:
        encoded = mask_encode(height=row.image.height, width=row.image.width, rle=rle, png=png)
        row.rle_counts, row.area, row.bbox = encoded.counts, encoded.area, encoded.bbox
    if category is not UNCHANGED:
        row.category = mask_category(project_id=row.project_id, category_id=category)
    lease_renew_for_accept(image=row.image, user=user, now=now)  # last: refusals touch nothing
    row.clicks = min(MAX_COUNT, (row.clicks or 0) + clicks)
    row.brush_strokes = min(MAX_COUNT, (row.brush_strokes or 0) + brush_strokes)
    row.seconds_spent = (row.seconds_spent or 0.0) + (seconds or 0.0)
    row.status = Mask.Status.ACCEPTED
    row.edit_count += 1
    row.edited_by = user
    row.edited_at = now or timezone.now()
    row.reviewed_by = None
    row.reviewed_at = None
    row.save(
        update_fields=[
            "rle_counts",
            "area",
            "bbox",
            "clicks",
            "brush_strokes",
            "seconds_spent",
            "status",
            "edit_count",
            "edited_by",
            "edited_at",
            "reviewed_by",
            "reviewed_at",
            "category",
            "updated_at",
        ]
    )
    return row
