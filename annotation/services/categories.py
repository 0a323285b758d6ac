"""Categories: a project's optional class labels, and the category a mask carries.

Masks are class-agnostic unless a project defines categories (SAM's data engine needs none).
Project admins create, rename, recolour and delete them; annotators pick one when they accept
or edit a mask; COCO exports write them as the file's categories and COCO imports keep the
file's categories (matched by name, created when missing).
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction

from annotation.errors import ConflictError, DomainError
from annotation.models import Category, Mask, Project
from annotation.selectors.categories import category_named

MAX_CATEGORIES = 1000  # per project: a label list, not a taxonomy of millions
MAX_NAME = 100
MAX_COCO_ID = 2**31 - 1
_COLOR = re.compile(r"#[0-9a-f]{6}")
# Distinct colours for categories created without one, in creation order.
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#800000",
    "#aaffc3",
    "#808000",
    "#000075",
)


class InvalidCategory(DomainError):
    """A category that cannot be written as asked, or one that is not the project's."""

    code = "invalid_category"


class CategoryInUse(DomainError):
    """Deleting a category that masks carry, without ``force``."""

    status_code = 409
    code = "category_in_use"


# --- checks ------------------------------------------------------------------------------------


def category_name_checked(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidCategory("a category name is a string")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise InvalidCategory("a category needs a name")
    if len(cleaned) > MAX_NAME:
        raise InvalidCategory(f"a category name has at most {MAX_NAME} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cleaned):
        raise InvalidCategory("a category name has no control characters")
    return cleaned


def category_color_checked(color: object) -> str:
    value = color.strip().lower() if isinstance(color, str) else color
    if not isinstance(value, str) or not _COLOR.fullmatch(value):
        raise InvalidCategory(f"a colour is #rrggbb, got {color!r}")
    return value


def _coco_id_checked(coco_id: object) -> int:
    if not isinstance(coco_id, int) or isinstance(coco_id, bool) or not 0 < coco_id <= MAX_COCO_ID:
        raise InvalidCategory(f"a COCO category id is an integer from 1 to {MAX_COCO_ID}")
    return coco_id


def _name_taken(project: Project, name: str, *, other_than: int | None = None) -> bool:
    same = category_named(project=project, name=name)
    return same is not None and same.pk != other_than


def mask_category(*, project_id: int, category_id: int | None) -> Category | None:
    """The category an accept or edit names: None for none, InvalidCategory (400) when it is
    not a category of the mask's project."""
    if category_id is None:
        return None
    if not isinstance(category_id, int) or isinstance(category_id, bool):
        raise InvalidCategory("category is a category id or null")
    category = Category.objects.filter(pk=category_id, project_id=project_id).first()
    if category is None:
        raise InvalidCategory(f"category #{category_id} is not a category of this project")
    return category


# --- writes ------------------------------------------------------------------------------------


@transaction.atomic
def category_create(
    *, project: Project, name: object, color: object = None, coco_id: object = None
) -> Category:
    """Add a category to ``project``. ``color`` defaults to the next palette colour and
    ``coco_id`` to one above the project's highest. Refused, nothing written: InvalidCategory
    (a bad name, colour or id, the project's MAX_CATEGORIES reached), ConflictError (the name,
    in any case, or the COCO id is taken)."""
    locked = Project.objects.select_for_update().get(pk=project.pk)  # serialises the ids
    cleaned = category_name_checked(name)
    existing = Category.objects.filter(project=locked)
    count = existing.count()
    if count >= MAX_CATEGORIES:
        raise InvalidCategory(f"a project has at most {MAX_CATEGORIES} categories")
    if _name_taken(locked, cleaned):
        raise ConflictError(f"project {locked.name!r} has a category named {cleaned!r} already")
    if coco_id is None:
        highest = existing.order_by("-coco_id").values_list("coco_id", flat=True).first()
        coco_id = (highest or 0) + 1
    checked_id = _coco_id_checked(coco_id)
    if existing.filter(coco_id=checked_id).exists():
        raise ConflictError(f"COCO category id {checked_id} is taken in project {locked.name!r}")
    return Category.objects.create(
        project=locked,
        name=cleaned,
        color=PALETTE[count % len(PALETTE)] if color is None else category_color_checked(color),
        coco_id=checked_id,
    )


@transaction.atomic
def category_update(*, category: Category, name: object = None, color: object = None) -> Category:
    """Rename or recolour a category (None: unchanged); its masks follow. Refused as in
    :func:`category_create`."""
    row = Category.objects.select_for_update().get(pk=category.pk)
    if name is not None:
        cleaned = category_name_checked(name)
        if _name_taken(row.project, cleaned, other_than=row.pk):
            raise ConflictError(f"the project has a category named {cleaned!r} already")
        row.name = cleaned
    if color is not None:
        row.color = category_color_checked(color)
    row.save(update_fields=["name", "color"])
    return row


@transaction.atomic
def category_delete(*, category: Category, force: bool = False) -> int:
    """Delete a category; returns how many masks carried it (now without a category).

    Refused with CategoryInUse (409, ``masks`` in the body) when masks carry it, unless
    ``force``: labels are work, so taking them off masks is asked for explicitly.
    """
    row = Category.objects.select_for_update().get(pk=category.pk)
    used = Mask.objects.filter(category=row).count()
    if used and not force:
        raise CategoryInUse(
            f"{used} masks carry category {row.name!r}: delete it with force to leave them "
            "without a category",
            extra={"masks": used},
        )
    Mask.objects.filter(category=row).update(category=None)
    row.delete()
    return used


@transaction.atomic
def categories_for_import(
    *, project: Project, records: Sequence[Mapping[str, Any]]
) -> tuple[dict[int, Category], int]:
    """A COCO file's categories (checked ``{"id", "name"}`` records) as the project's: matched
    by name (exactly, else ignoring case), created when missing with the file's id as their
    ``coco_id`` where it is free. Returns (file id -> category, how many were created)."""
    existing = list(Category.objects.select_for_update().filter(project=project))
    by_name = {c.name: c for c in existing}
    by_lower = {c.name.lower(): c for c in existing}
    used_ids = {c.coco_id for c in existing}
    mapped: dict[int, Category] = {}
    created = 0
    for record in records:
        name = category_name_checked(record["name"])
        found = by_name.get(name) or by_lower.get(name.lower())
        if found is None:
            file_id = record["id"]
            free = 0 < file_id <= MAX_COCO_ID and file_id not in used_ids
            coco_id = file_id if free else max(used_ids, default=0) + 1
            found = category_create(project=project, name=name, coco_id=coco_id)
            by_name[name] = by_lower[name.lower()] = found
            used_ids.add(found.coco_id)
            created += 1
        mapped[record["id"]] = found
    return mapped, created
