"""Category reads: a project's categories, with how many masks carry each."""

from django.db.models import Count, QuerySet
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
