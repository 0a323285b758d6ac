"""The review queue page (reviewers and admins): the images with accepted masks nobody has
reviewed yet, each mask drawn over its image; the verdicts go through the REST API. And the
page of masks sent back: what reviewers rejected and why, for the annotators to fix."""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from annotation.ids import id_from_query
from annotation.models import Image, Mask
from annotation.permissions import ANNOTATOR, REVIEWER, has_role, require_role
from annotation.selectors.categories import project_categories
from annotation.selectors.projects import project_get_for_user
from annotation.selectors.review import masks_sent_back, review_pending_masks, review_queue

IMAGES_PER_PAGE = 20


@dataclass(frozen=True)
class ReviewItem:
    image: Image
    masks: list[Mask]  # the ones still waiting for a verdict


def _pending(image: Image, annotator_id: int | None, category_id: int | None) -> list[Mask]:
    """The image's masks still waiting for a verdict, of the annotator and category asked for
    (the queue prefetches every accepted one)."""
    masks: list[Mask] = getattr(image, "review_masks", [])
    return [
        mask
        for mask in masks
        if mask.reviewed_at is None
        and (annotator_id is None or mask.annotator_id == annotator_id)
        and (category_id is None or mask.category_id == category_id)
    ]


def _mask_data(mask: Mask, image: Image) -> dict[str, Any]:
    """What the page's script draws: the RLE, and the category's colour as [r, g, b] (null: the
    page picks one)."""
    color = mask.category.color if mask.category is not None else None
    return {
        "id": mask.pk,
        "rle": {"size": [image.height, image.width], "counts": mask.rle_counts},
        "color": None if color is None else [int(color[i : i + 2], 16) for i in (1, 3, 5)],
    }


@require_GET
@login_required
def review_queue_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """One page of the queue; the browser draws the masks from the embedded RLEs."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, role=REVIEWER)
    annotator_id = id_from_query(request.GET.get("annotator"))
    categories = list(project_categories(project=project))
    category = next(
        (c for c in categories if c.pk == id_from_query(request.GET.get("category"))), None
    )
    category_id = None if category is None else category.pk
    queue = review_queue(project=project, annotator_id=annotator_id, category_id=category_id)
    page = Paginator(queue, IMAGES_PER_PAGE).get_page(request.GET.get("page"))
    items = [
        ReviewItem(image=image, masks=_pending(image, annotator_id, category_id)) for image in page
    ]
    pending = review_pending_masks(project=project)
    if annotator_id is not None:
        pending = pending.filter(annotator_id=annotator_id)
    if category_id is not None:
        pending = pending.filter(category_id=category_id)
    narrowed = {"annotator": annotator_id, "category": category_id}
    totals = pending.aggregate(masks=Count("id"), images=Count("image_id", distinct=True))
    review_data = {
        "images": [
            {
                "id": item.image.pk,
                "width": item.image.width,
                "height": item.image.height,
                "display_url": reverse("api-image-display", args=[item.image.pk]),
                "masks": [_mask_data(mask, item.image) for mask in item.masks],
            }
            for item in items
        ]
    }
    context = {
        "project": project,
        "page": page,
        "items": items,
        "queue_images": totals["images"],
        "queue_masks": totals["masks"],
        "annotator_id": annotator_id,
        "categories": categories,
        "category": category,
        # The filters for the pager and "load more" links: "annotator=3&category=4&".
        "filter_query": "".join(f"{k}={v}&" for k, v in narrowed.items() if v is not None),
        "review_data": review_data,
    }
    return render(request, "annotation/review.html", context)


SENT_BACK_PER_PAGE = 50


@require_GET
@login_required
def sent_back_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Masks reviewers rejected, with the reason: annotators see their own, reviewers and
    admins everyone's (``?annotator=`` narrows it). Each links to the tool to fix it."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, role=ANNOTATOR)
    may_review = has_role(user=request.user, project=project, role=REVIEWER)
    annotator_id = id_from_query(request.GET.get("annotator")) if may_review else request.user.pk
    masks = masks_sent_back(project=project, annotator_id=annotator_id)
    page = Paginator(masks, SENT_BACK_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "project": project,
        "page": page,
        "may_review": may_review,
        "annotator_id": annotator_id,
    }
    return render(request, "annotation/sent_back.html", context)
