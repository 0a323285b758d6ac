"""Category reads: a project's categories, with how many masks carry each."""

from typing import NamedTuple

from django.db.models import Count, QuerySet
from django.db.models.functions import Lower
from django.http import Http404

from annotation.ids import id_in_range
from annotation.models import Category, Mask, Project


def project_categories(*, project: Project) -> QuerySet[Category]:
    """``project``'s categories in COCO id order."""
    return Category.objects.filter(project=project).order_by("coco_id")


def category_get(*, project: Project, category_id: int) -> Category:
    """One category of ``project``; Http404 otherwise."""
    category = (
        Category.objects.filter(project=project, pk=category_id).first()
        if id_in_range(category_id)
        else None
    )
    if category is None:
        raise Http404("no such category")
    return category


def category_mask_counts(*, project: Project, status: str = Mask.Status.ACCEPTED) -> dict[int, int]:
    """Category id -> masks in ``status`` carrying it (categories without any are left out);
    read through the partial index ``mask_category``."""
    rows = (
        Mask.objects.filter(category__project=project, category__isnull=False, status=status)
        .values("category_id")
        .annotate(masks=Count("id"))
        .order_by()
    )
    return {row["category_id"]: row["masks"] for row in rows}


def category_named(*, project: Project, name: str) -> Category | None:
    """``project``'s category called ``name`` in any case (names are unique that way)."""
    return (
        Category.objects.annotate(lowered=Lower("name"))
        .filter(project=project, lowered=name.lower())
        .first()
    )


class CategoryMasks(NamedTuple):
    category: Category
    masks: int  # accepted masks that carry it


def categories_with_masks(*, project: Project) -> list[CategoryMasks]:
    """``project``'s categories in COCO id order, each with its accepted masks."""
    counts = category_mask_counts(project=project)
    return [CategoryMasks(c, counts.get(c.pk, 0)) for c in project_categories(project=project)]
