"""The review queue: images holding accepted masks that nobody has reviewed yet; and the masks
reviewers sent back to their annotators."""

from django.db.models import Exists, OuterRef, Prefetch, QuerySet

from annotation.models import Image, Mask, Project
from annotation.selectors.masks import usable_masks


def review_pending_masks(*, project: Project) -> QuerySet[Mask]:
    """Accepted, not yet reviewed masks of ``project`` (partial index ``mask_review_pending``),
    but not those of skipped images: set aside, they wait for a reopen, not for review."""
    return usable_masks(project=project, status=Mask.Status.ACCEPTED).filter(
        reviewed_at__isnull=True
    )


def review_queue(
    *, project: Project, annotator_id: int | None = None, category_id: int | None = None
) -> QuerySet[Image]:
    """Images of ``project`` with at least one pending mask, in id order.

    Each image carries ``review_masks``: all its accepted masks in id order (reviewed ones
    too, so the reviewer sees the whole picture; ``reviewed_at`` tells them apart).
    ``annotator_id`` narrows the queue to images where that user has pending masks,
    ``category_id`` to those with pending masks of that category.
    """
    pending = review_pending_masks(project=project).filter(image_id=OuterRef("pk"))
    if annotator_id is not None:
        pending = pending.filter(annotator_id=annotator_id)
    if category_id is not None:
        pending = pending.filter(category_id=category_id)
    accepted = (
        Mask.objects.filter(status=Mask.Status.ACCEPTED)
        .select_related("image", "annotator", "reviewed_by", "edited_by", "category")
        .order_by("id")
    )
    return (
        Image.objects.filter(project=project)
        .filter(Exists(pending))
        .order_by("id")
        .prefetch_related(Prefetch("masks", queryset=accepted, to_attr="review_masks"))
    )


def masks_sent_back(*, project: Project, annotator_id: int | None = None) -> QuerySet[Mask]:
    """Masks of ``project`` a reviewer rejected, newest decision first, for their annotators
    to read why and fix them. Prefilled masks annotators rejected in the tool are not review
    feedback, and masks of skipped images wait for a reopen."""
    masks = usable_masks(project=project, status=Mask.Status.REJECTED).exclude(
        source=Mask.Source.PREFILL
    )
    if annotator_id is not None:
        masks = masks.filter(annotator_id=annotator_id)
    return masks.select_related("image", "annotator", "reviewed_by", "category").order_by(
        "-reviewed_at", "-id"
    )
