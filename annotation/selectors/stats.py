"""Annotation speed: seconds per mask, clicks per mask and masks per image, over time.

Counted masks are those people made in the window: an annotator is set and the mask was
accepted (reviewers rejecting it later does not take back the time spent). Averages ignore
masks without the figure (e.g. imported masks without timing). Prefilled masks (semi-automatic
stage) have no annotator, so s/mask and clicks/mask are the annotators' added masks only, as in
the paper; they are counted on their own (``prefilled``: made by prefill runs in the window,
``prefill_kept`` accepted, ``prefill_rejected`` rejected in the tool or in review,
``prefill_pending`` still proposed), for the project as a whole. Everything is aggregated by
the database (``COUNT``/``AVG`` grouped by day or annotator, served by the indexes
``mask_project_time`` and ``mask_annotator_time``); Python only fills in days without masks.
Days are calendar days in ``TIME_ZONE``; the window is the last ``days`` days, today included.
"""

import datetime as dt
from typing import Any, TypedDict

from django.db.models import Avg, Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from annotation.ids import id_in_range
from annotation.models import Category, Image, Mask, Membership, Project

MAX_DAYS = 366


class Rates(TypedDict):
    masks: int
    seconds_per_mask: float | None
    clicks_per_mask: float | None


class ReviewRates(TypedDict):
    """Of the masks made in the window: how many a reviewer decided on, how many stand
    rejected now (a fixed and resubmitted one no longer does), and their ratio."""

    masks_reviewed: int
    masks_rejected: int
    rejection_rate: float | None


class Totals(Rates, ReviewRates):
    images_total: int
    images_done: int
    images_skipped: int
    masks_per_image: float | None
    prefilled: int
    prefill_kept: int
    prefill_rejected: int
    prefill_pending: int


class DayRates(Rates):
    date: dt.date
    masks_per_image: float | None
    prefilled: int


class AnnotatorRates(Rates, ReviewRates):
    user_id: int
    username: str
    images_skipped: int  # images this annotator set aside in the window (still skipped)


class CategoryRates(Rates, ReviewRates):
    category_id: int | None  # None: the masks without a category
    name: str | None
    color: str | None


class Stats(TypedDict, total=False):
    totals: Totals
    per_day: list[DayRates]
    per_annotator: list[AnnotatorRates]
    per_category: list[CategoryRates]


_AGGREGATES: dict[str, Any] = {
    "masks": Count("id"),
    "images": Count("image_id", distinct=True),
    "seconds_per_mask": Avg("seconds_spent"),
    "clicks_per_mask": Avg("clicks"),
}


def stats_window_start(*, days: int, now: dt.datetime | None = None) -> dt.datetime:
    """Midnight (``TIME_ZONE``) at the start of the first of the last ``days`` days."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1 to {MAX_DAYS}, got {days}")
    first = timezone.localdate(now or timezone.now()) - dt.timedelta(days=days - 1)
    return timezone.make_aware(dt.datetime.combine(first, dt.time.min))


def _masks(*, project: Project, since: dt.datetime, annotator_id: int | None) -> QuerySet[Mask]:
    masks = Mask.objects.filter(
        project=project,
        created_at__gte=since,
        annotator__isnull=False,
        status__in=[Mask.Status.ACCEPTED, Mask.Status.REJECTED],
    )
    if annotator_id is not None:
        masks = masks.filter(annotator_id=annotator_id)
    return masks.order_by()


_PREFILL_KEYS = ("prefilled", "prefill_kept", "prefill_rejected", "prefill_pending")


def _prefill_days(*, project: Project, since: dt.datetime) -> dict[dt.date, dict[str, int]]:
    """Per day: prefilled masks made, and how many of them are now accepted, rejected or
    still proposed (one grouped query; totals are their sums)."""
    rows = (
        Mask.objects.filter(project=project, source=Mask.Source.PREFILL, created_at__gte=since)
        .order_by()
        .annotate(date=TruncDate("created_at"))
        .values("date")
        .annotate(
            prefilled=Count("id"),
            prefill_kept=Count("id", filter=Q(status=Mask.Status.ACCEPTED)),
            prefill_rejected=Count("id", filter=Q(status=Mask.Status.REJECTED)),
            prefill_pending=Count("id", filter=Q(status=Mask.Status.PROPOSED)),
        )
    )
    days: dict[dt.date, dict[str, int]] = {}
    for row in rows:
        values: dict[str, Any] = dict(row)
        days[values["date"]] = {key: int(values[key]) for key in _PREFILL_KEYS}
    return days


def _prefill_totals(days: dict[dt.date, dict[str, int]]) -> dict[str, int]:
    return {key: sum(day[key] for day in days.values()) for key in _PREFILL_KEYS}


# A rejected mask was reviewed even where an import or script set the status alone.
_REVIEW_AGGREGATES: dict[str, Any] = {
    "masks_reviewed": Count(
        "id", filter=Q(reviewed_at__isnull=False) | Q(status=Mask.Status.REJECTED)
    ),
    "masks_rejected": Count("id", filter=Q(status=Mask.Status.REJECTED)),
}


def _review_rates(row: dict[str, Any]) -> ReviewRates:
    reviewed, rejected = int(row["masks_reviewed"]), int(row["masks_rejected"])
    return {
        "masks_reviewed": reviewed,
        "masks_rejected": rejected,
        "rejection_rate": rejected / reviewed if reviewed else None,
    }


def _per_image(row: dict[str, Any]) -> float | None:
    return row["masks"] / row["images"] if row["images"] else None


def _rates(row: dict[str, Any]) -> Rates:
    return {
        "masks": int(row["masks"]),
        "seconds_per_mask": row["seconds_per_mask"],
        "clicks_per_mask": None
        if row["clicks_per_mask"] is None
        else float(row["clicks_per_mask"]),
    }


def _totals(
    *, project: Project, masks: QuerySet[Mask], prefill: dict[dt.date, dict[str, int]]
) -> Totals:
    images = Image.objects.filter(project=project).aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(status=Image.Status.DONE)),
        skipped=Count("id", filter=Q(status=Image.Status.SKIPPED)),
    )
    row = masks.aggregate(**_AGGREGATES, **_REVIEW_AGGREGATES)
    prefilled = _prefill_totals(prefill)
    return {
        **_rates(row),
        **_review_rates(row),
        "images_total": images["total"],
        "images_done": images["done"],
        "images_skipped": images["skipped"],
        "masks_per_image": _per_image(row),
        "prefilled": prefilled["prefilled"],
        "prefill_kept": prefilled["prefill_kept"],
        "prefill_rejected": prefilled["prefill_rejected"],
        "prefill_pending": prefilled["prefill_pending"],
    }


def _per_day(
    *,
    masks: QuerySet[Mask],
    prefill: dict[dt.date, dict[str, int]],
    since: dt.datetime,
    days: int,
) -> list[DayRates]:
    rows: dict[dt.date, dict[str, Any]] = {
        row["date"]: dict(row)
        for row in masks.annotate(date=TruncDate("created_at"))
        .values("date")
        .annotate(**_AGGREGATES)
        .order_by("date")
    }
    empty: dict[str, Any] = {
        "masks": 0,
        "images": 0,
        "seconds_per_mask": None,
        "clicks_per_mask": None,
    }
    first = timezone.localdate(since)
    series: list[DayRates] = []
    for offset in range(days):
        date = first + dt.timedelta(days=offset)
        row = rows.get(date, empty)
        series.append(
            {
                "date": date,
                **_rates(row),
                "masks_per_image": _per_image(row),
                "prefilled": prefill.get(date, {}).get("prefilled", 0),
            }
        )
    return series


def _skips(*, project: Project, since: dt.datetime) -> QuerySet[Image]:
    """Images of ``project`` skipped since ``since`` and still skipped."""
    return Image.objects.filter(
        project=project, status=Image.Status.SKIPPED, skipped_at__gte=since
    ).exclude(skipped_by=None)


def annotator_skipped(
    *, project: Project, user_id: int, days: int, now: dt.datetime | None = None
) -> int:
    """How many images of ``project`` the user skipped in the last ``days`` days (still skipped)."""
    since = stats_window_start(days=days, now=now)
    return _skips(project=project, since=since).filter(skipped_by_id=user_id).count()


def _per_annotator(*, masks: QuerySet[Mask], skips: QuerySet[Image]) -> list[AnnotatorRates]:
    """One row per annotator with masks or skips in the window, most masks first."""
    rows: dict[int, AnnotatorRates] = {
        row["annotator_id"]: {
            "user_id": row["annotator_id"],
            "username": row["annotator__username"],
            **_rates(dict(row)),
            **_review_rates(dict(row)),
            "images_skipped": 0,
        }
        for row in masks.values("annotator_id", "annotator__username").annotate(
            **_AGGREGATES, **_REVIEW_AGGREGATES
        )
    }
    skipped = skips.values("skipped_by_id", "skipped_by__username").annotate(n=Count("id"))
    for row in skipped:
        user_id = row["skipped_by_id"]
        if user_id not in rows:  # skipped images but made no mask
            rows[user_id] = {
                "user_id": user_id,
                "username": row["skipped_by__username"],
                **_rates({"masks": 0, "seconds_per_mask": None, "clicks_per_mask": None}),
                **_review_rates({"masks_reviewed": 0, "masks_rejected": 0}),
                "images_skipped": 0,
            }
        rows[user_id]["images_skipped"] = int(row["n"])
    return sorted(rows.values(), key=lambda row: (-row["masks"], row["username"]))


def _per_category(*, project: Project, masks: QuerySet[Mask]) -> list[CategoryRates]:
    """One row per category of the project, in COCO id order, then the masks without one (if
    any); empty for a project without categories. Some classes cost more time per mask than
    others: this is where it shows."""
    categories = list(Category.objects.filter(project=project).order_by("coco_id"))
    if not categories:
        return []
    grouped: dict[int | None, dict[str, Any]] = {
        row["category_id"]: dict(row)
        for row in masks.values("category_id").annotate(**_AGGREGATES, **_REVIEW_AGGREGATES)
    }
    empty: dict[str, Any] = {"masks": 0, "seconds_per_mask": None, "clicks_per_mask": None}
    empty |= {"masks_reviewed": 0, "masks_rejected": 0}
    rows: list[CategoryRates] = []
    for category in [*categories, None]:
        key = None if category is None else category.pk
        if category is None and key not in grouped:
            continue
        row = grouped.get(key, empty)
        rows.append(
            {
                "category_id": key,
                "name": None if category is None else category.name,
                "color": None if category is None else category.color,
                **_rates(row),
                **_review_rates(row),
            }
        )
    return rows


def project_stats(*, project: Project, days: int = 30, now: dt.datetime | None = None) -> Stats:
    """Totals, a per-day series (every day of the window), per-annotator figures and, in a
    project with categories, per-category figures."""
    since = stats_window_start(days=days, now=now)
    masks = _masks(project=project, since=since, annotator_id=None)
    prefill = _prefill_days(project=project, since=since)
    return {
        "totals": _totals(project=project, masks=masks, prefill=prefill),
        "per_day": _per_day(masks=masks, prefill=prefill, since=since, days=days),
        "per_annotator": _per_annotator(masks=masks, skips=_skips(project=project, since=since)),
        "per_category": _per_category(project=project, masks=masks),
    }


def annotator_stats(
    *, project: Project, user_id: int, days: int = 30, now: dt.datetime | None = None
) -> Stats:
    """The figures of one annotator's masks; ``images_total``/``images_done`` and the prefill
    counts stay the project's (progress the annotator contributes to)."""
    since = stats_window_start(days=days, now=now)
    masks = _masks(project=project, since=since, annotator_id=user_id)
    prefill = _prefill_days(project=project, since=since)
    return {
        "totals": _totals(project=project, masks=masks, prefill=prefill),
        "per_day": _per_day(masks=masks, prefill=prefill, since=since, days=days),
    }


def has_worked_in(*, project: Project, user_id: int) -> bool:
    """Whether the user is a member of ``project`` or made masks in it (a former member)."""
    if not id_in_range(user_id):  # no row can have it; the driver would overflow
        return False
    return (
        Membership.objects.filter(project=project, user_id=user_id).exists()
        or Mask.objects.filter(project=project, annotator_id=user_id).exists()
    )
