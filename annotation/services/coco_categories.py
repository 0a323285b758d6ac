"""The categories of a COCO file being imported (annotation.services.coco_import): checked
with the rest of the file, then matched to the project's categories or created.

A category marked ``"class_agnostic": true`` (what a maskloop export writes for masks without
a category) stands for no category, so a class-agnostic project's export comes back as it
left.
"""

from typing import Any

from annotation.errors import DomainError
from annotation.models import Category, Project
from annotation.services.categories import (
    MAX_CATEGORIES,
    categories_for_import,
    category_name_checked,
)

# file category id -> the name to keep, or None for "no category"
FileCategories = dict[int, str | None]


def is_whole(value: object) -> bool:
    """An integer JSON value (a bool is not one), as COCO ids are."""
    return isinstance(value, int) and not isinstance(value, bool)


def file_categories(
    coco: dict[str, Any], *, project: Project, errors: list[str], keep: bool
) -> FileCategories:
    """The file's checked categories (empty when ``keep`` is off or the file has none);
    problems are appended to ``errors``."""
    records = coco.get("categories")
    if not keep or records is None:
        return {}
    if not isinstance(records, list):
        errors.append("categories must be a list")
        return {}
    found: FileCategories = {}
    for index, record in enumerate(records):
        where = f"categories[{index}]"
        if not isinstance(record, dict) or not is_whole(record.get("id")):
            errors.append(f"{where}: needs an integer id")
            continue
        if record["id"] in found:
            errors.append(f"{where}: category id {record['id']} appears twice")
            continue
        if record.get("class_agnostic") is True:
            found[record["id"]] = None
            continue
        try:
            found[record["id"]] = category_name_checked(record.get("name"))
        except DomainError as exc:
            errors.append(f"{where} (id {record['id']}): {exc.message}")
    names = {name.lower() for name in found.values() if name is not None}
    existing = {
        name.lower()
        for name in Category.objects.filter(project=project).values_list("name", flat=True)
    }
    if len(names | existing) > MAX_CATEGORIES:
        errors.append(
            f"the file would take the project to {len(names | existing)} categories, over the "
            f"{MAX_CATEGORIES} a project may have"
        )
    return found


def annotation_category(
    record: dict[str, Any], categories: FileCategories
) -> tuple[int | None, str | None]:
    """``(file category id to keep or None, error or None)`` of one annotation; no category
    when the file's are not kept (``categories`` empty)."""
    if not categories or record.get("category_id") is None:
        return None, None
    value = record["category_id"]
    if not is_whole(value) or value not in categories:
        return None, f"category_id {value!r} is not one of the file's categories"
    return (value if categories[value] is not None else None), None


def categories_write(
    *, project: Project, categories: FileCategories
) -> tuple[dict[int, Category], int]:
    """The project's category for each kept file category (created when missing), and how
    many were created."""
    records = [{"id": key, "name": name} for key, name in categories.items() if name is not None]
    return categories_for_import(project=project, records=records) if records else ({}, 0)
