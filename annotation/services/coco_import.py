"""Masks from a COCO annotation file, onto a project's images: labels made elsewhere (CVAT,
Label Studio, an earlier dataset, a maskloop export) brought in to be reviewed, trained on and
exported with the rest.

Images are matched by ``file_name`` (its base name, as maskloop stores it) or, for the names a
maskloop export gives images it has no name for, ``<sha256>.<ext>``. A segmentation may be a
compressed RLE, an uncompressed RLE (``iscrowd: 1``) or polygons; pycocotools turns the last
two into compressed RLE. The file's categories become the project's (matched by name, created
when missing; ``keep_categories=False`` imports the masks without a category), see
:mod:`annotation.services.coco_categories`.

Everything is checked before anything is written: one bad annotation refuses the whole file
with a list of what is wrong (:class:`CocoImportRefused`). The import is then a ``Job`` with
progress; masks go in image by image, each with an idempotency key made of the project, the
file's sha256 and the annotation id, so a rerun after a crash, or of the same file, adds only
what is missing.
"""

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from annotation.errors import DomainError, InvalidMask
from annotation.models import Category, Image, Mask, Project
from annotation.services.coco_categories import (
    annotation_category,
    categories_write,
    file_categories,
    is_whole,
)
from annotation.services.coco_segmentation import segmentation_encoded
from annotation.services.mask_encoding import EncodedMask
from engine.models import Job
from engine.services.jobs import job_create, job_fail, job_progress, job_start, job_succeed

MAX_FILE_BYTES = 2 * 1024**3
ERRORS_SHOWN = 20
LOOKUP_CHUNK = 5000  # file names per query when finding the file's images
_SHA256 = re.compile(r"[0-9a-f]{64}")
PROGRESS_EVERY_S = 0.5  # the job row's progress: not one UPDATE per image of a large file
KEY_PREFIX = "coco"

ProgressCallback = Callable[[int, int], None]


class CocoImportRefused(DomainError):
    """The file cannot be imported as it is; ``details`` lists the problems (at most
    ERRORS_SHOWN, with the total in the message). Nothing was written."""

    code = "coco_refused"


class CocoUploadTooLarge(DomainError):
    """An upload over MASKLOOP_MAX_COCO_UPLOAD_BYTES: it goes through the command instead."""

    status_code = 413
    code = "too_large"


@dataclass
class CocoImportSummary:
    job_id: int
    images: int  # images of the project that received masks from the file
    masks: int  # masks written now
    # Masks left out as present already: imported from this file before (same project, same
    # annotation id), or the very pixels of a mask the image has (a maskloop export of it).
    already: int
    skipped_images: list[str] = field(default_factory=list)  # not in the project (allowed)
    categories: int = 0  # in the file
    categories_created: int = 0  # new categories of the project

    @property
    def line(self) -> str:
        skipped = f", {len(self.skipped_images)} images not in the project skipped"
        return (
            f"imported {self.masks} masks onto {self.images} images, {self.already} already "
            f"in the project{skipped if self.skipped_images else ''}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "masks": self.masks,
            "already": self.already,
            "skipped_images": self.skipped_images[:ERRORS_SHOWN],
            "skipped_images_total": len(self.skipped_images),
            "categories": self.categories,
            "categories_created": self.categories_created,
        }


@dataclass(frozen=True)
class _Planned:
    image: Image
    annotation_id: int
    mask: EncodedMask
    category: int | None = None  # the file's category id, when kept


def coco_import(
    *,
    project: Project,
    path: Path,
    user: User | None = None,
    skip_missing_images: bool = False,
    keep_categories: bool = True,
    progress: ProgressCallback | None = None,
) -> CocoImportSummary:
    """Import the masks of the COCO file at ``path`` as accepted masks of source ``imported``
    in the project's current stage (see the module docstring). Raises CocoImportRefused
    before anything is written."""
    return coco_import_data(
        project=project,
        data=_read(path),
        name=path.name,
        user=user,
        skip_missing_images=skip_missing_images,
        keep_categories=keep_categories,
        progress=progress,
    )


def coco_import_upload(
    *,
    project: Project,
    upload: UploadedFile,
    user: User | None = None,
    skip_missing_images: bool = False,
    keep_categories: bool = True,
) -> CocoImportSummary:
    """:func:`coco_import_data` of an uploaded file (the API, the project page), imported while
    the request waits: refused with CocoUploadTooLarge over MASKLOOP_MAX_COCO_UPLOAD_BYTES."""
    limit = settings.MASKLOOP_MAX_COCO_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise CocoUploadTooLarge(
            f"{upload.name} is {upload.size} bytes, over the {limit} bytes an upload may have "
            "(MASKLOOP_MAX_COCO_UPLOAD_BYTES): import it with manage.py import_coco on the server"
        )
    return coco_import_data(
        project=project,
        data=upload.read(),
        name=upload.name or "upload.json",
        user=user,
        skip_missing_images=skip_missing_images,
        keep_categories=keep_categories,
    )


def coco_import_data(
    *,
    project: Project,
    data: bytes,
    name: str,
    user: User | None = None,
    skip_missing_images: bool = False,
    keep_categories: bool = True,
    progress: ProgressCallback | None = None,
) -> CocoImportSummary:
    """:func:`coco_import` of a file's bytes (an upload); ``name`` names it in messages."""
    sha256 = hashlib.sha256(data).hexdigest()
    coco = _parse(data)
    errors: list[str] = []
    categories = file_categories(coco, project=project, errors=errors, keep=keep_categories)
    images, skipped = _match_images(project, coco["images"], errors, skip_missing_images)
    listed = {r["id"] for r in coco["images"] if isinstance(r, dict) and is_whole(r.get("id"))}
    planned = _plan(coco["annotations"], images, listed, errors, categories)
    if errors:
        shown = "; ".join(errors[:ERRORS_SHOWN])
        more = f" (and {len(errors) - ERRORS_SHOWN} more)" if len(errors) > ERRORS_SHOWN else ""
        raise CocoImportRefused(
            f"{len(errors)} problem(s) in {name}, nothing imported: {shown}{more}",
            details={"errors": errors[:ERRORS_SHOWN], "total": len(errors)},
        )
    by_image: dict[int, list[_Planned]] = {}
    for item in planned:
        by_image.setdefault(item.image.pk, []).append(item)
    prefix = f"{KEY_PREFIX}:{project.pk}:{sha256[:40]}:"
    project_categories, created = categories_write(project=project, categories=categories)
    job = job_create(
        kind=Job.Kind.IMPORT_MASKS,
        project=project,
        params={"file": name, "sha256": sha256, "annotations": len(planned)},
        created_by=user,
        total=len(by_image),
        message=f"importing {len(planned)} masks onto {len(by_image)} images",
    )
    job_start(job_id=job.pk)
    summary = CocoImportSummary(
        job_id=job.pk,
        images=len(by_image),
        masks=0,
        already=0,
        skipped_images=skipped,
        categories=len(coco.get("categories") or []),
        categories_created=created,
    )
    reported = time.monotonic()
    try:
        for done, items in enumerate(by_image.values(), start=1):
            written = _write_image(
                items, project=project, prefix=prefix, job=job, categories=project_categories
            )
            summary.masks += written
            summary.already += len(items) - written
            if done == len(by_image) or time.monotonic() - reported >= PROGRESS_EVERY_S:
                job_progress(job_id=job.pk, done=done)
                reported = time.monotonic()
            if progress is not None:
                progress(done, len(by_image))
    except BaseException as exc:
        job_fail(job_id=job.pk, error=exc)
        raise
    job_succeed(job_id=job.pk, result=summary.as_dict(), message=summary.line)
    return summary


# --- reading and checking ----------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CocoImportRefused(
                f"{path.name} is {size} bytes, over the {MAX_FILE_BYTES} bytes an import reads"
            )
        return path.read_bytes()
    except OSError as exc:
        raise CocoImportRefused(f"cannot read {path}: {exc.strerror or exc}") from exc


def _parse(data: bytes) -> dict[str, Any]:
    try:
        coco = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CocoImportRefused(f"not a JSON file: {exc}") from exc
    if not isinstance(coco, dict):
        raise CocoImportRefused("a COCO file is a JSON object with images and annotations")
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            raise CocoImportRefused(f"a COCO file needs a list of {key}")
    return coco


def _base_name(file_name: str) -> str:
    return PurePosixPath(file_name.replace("\\", "/")).name


def _candidates(
    project: Project, records: list[Any]
) -> tuple[dict[str, list[Image]], dict[str, Image]]:
    """The project's images the file may name, by file name and by sha256: only those are
    read (indexes ``image_project_file_name``, ``image_unique_per_project``), so a file about
    a few images of a project of millions reads a few rows."""
    names = {
        _base_name(r["file_name"])
        for r in records
        if isinstance(r, dict) and isinstance(r.get("file_name"), str) and r["file_name"]
    }
    # "<sha256>.<ext>": the name a maskloop export gives an image imported without one.
    stems = {name.rsplit(".", 1)[0] for name in names}
    stems = {stem for stem in stems if _SHA256.fullmatch(stem)}
    fields = ("pk", "file_name", "sha256", "width", "height", "project_id")
    by_name: dict[str, list[Image]] = {}
    by_sha: dict[str, Image] = {}
    ordered = sorted(names)
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        chunk = ordered[start : start + LOOKUP_CHUNK]
        for image in Image.objects.filter(project=project, file_name__in=chunk).only(*fields):
            by_name.setdefault(image.file_name, []).append(image)
    hashes = sorted(stems)
    for start in range(0, len(hashes), LOOKUP_CHUNK):
        chunk = hashes[start : start + LOOKUP_CHUNK]
        for image in Image.objects.filter(project=project, sha256__in=chunk).only(*fields):
            by_sha[image.sha256] = image
    return by_name, by_sha


def _match_images(
    project: Project, records: list[Any], errors: list[str], skip_missing: bool
) -> tuple[dict[int, Image], list[str]]:
    """COCO image id -> the project's image; the names of those not in the project."""
    by_name, by_sha = _candidates(project, records)
    matched: dict[int, Image] = {}
    skipped: list[str] = []
    for index, record in enumerate(records):
        where = f"images[{index}]"
        if not isinstance(record, dict) or not is_whole(record.get("id")):
            errors.append(f"{where}: needs an integer id")
            continue
        name = record.get("file_name")
        if not isinstance(name, str) or not name:
            errors.append(f"{where} (id {record['id']}): needs a file_name")
            continue
        base = _base_name(name)
        found = by_name.get(base, [])
        stem = base.rsplit(".", 1)[0]
        if not found and stem in by_sha:
            found = [by_sha[stem]]
        if len(found) > 1:
            errors.append(f"{where}: {len(found)} images of the project are named {base!r}")
            continue
        if not found:
            if skip_missing:
                skipped.append(base)
            else:
                errors.append(f"{where}: no image of the project is named {base!r}")
            continue
        image = found[0]
        size = (record.get("height"), record.get("width"))
        if size != (image.height, image.width):
            errors.append(
                f"{where} ({base}): {size[0]} x {size[1]} in the file, "
                f"{image.height} x {image.width} in the project"
            )
            continue
        if record["id"] in matched:
            errors.append(f"{where}: image id {record['id']} appears twice")
            continue
        matched[record["id"]] = image
    return matched, skipped


def _plan(
    records: list[Any],
    images: dict[int, Image],
    listed: set[int],
    errors: list[str],
    categories: dict[int, str | None],
) -> list[_Planned]:
    """The checked masks of the annotations on matched images (``listed``: every image id of
    the file; an annotation on another id is an error)."""
    planned: list[_Planned] = []
    seen: set[int] = set()
    for index, record in enumerate(records):
        where = f"annotations[{index}]"
        if not isinstance(record, dict) or not is_whole(record.get("id")):
            errors.append(f"{where}: needs an integer id")
            continue
        where = f"{where} (id {record['id']})"
        if record["id"] in seen:
            errors.append(f"{where}: the id appears twice")
            continue
        seen.add(record["id"])
        image_id = record.get("image_id")
        if not is_whole(image_id) or image_id not in listed:
            errors.append(f"{where}: image_id {image_id!r} is not one of the file's images")
            continue
        image = images.get(image_id)
        if image is None:
            continue  # an image skipped, or refused above (its own error says why)
        category, problem = annotation_category(record, categories)
        if problem is not None:
            errors.append(f"{where}: {problem}")
            continue
        try:
            encoded = segmentation_encoded(record.get("segmentation"), image=image)
        except InvalidMask as exc:
            errors.append(f"{where}: {exc.message}")
            continue
        planned.append(
            _Planned(image=image, annotation_id=record["id"], mask=encoded, category=category)
        )
    return planned


@transaction.atomic
def _write_image(
    items: list[_Planned],
    *,
    project: Project,
    prefix: str,
    job: Job,
    categories: dict[int, Category],
) -> int:
    """Insert one image's masks that are not stored yet (by key, or the same pixels as a
    mask of the image in any status: a rejected one is not brought back); how many."""
    image = items[0].image
    present = set(Mask.objects.filter(image=image).values_list("rle_counts", flat=True))
    keys = {
        f"{prefix}{item.annotation_id}": item for item in items if item.mask.counts not in present
    }
    stored = set(
        Mask.objects.filter(idempotency_key__in=list(keys)).values_list(
            "idempotency_key", flat=True
        )
    )
    rows = [
        Mask(
            project_id=project.pk,
            image=image,
            rle_counts=item.mask.counts,
            area=item.mask.area,
            bbox=item.mask.bbox,
            stage=project.stage,
            source=Mask.Source.IMPORTED,
            status=Mask.Status.ACCEPTED,
            idempotency_key=key,
            job=job,
            category=None if item.category is None else categories[item.category],
        )
        for key, item in keys.items()
        if key not in stored
    ]
    # Another import of the same file running at once may store a key first: skip it.
    Mask.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    return Mask.objects.filter(
        job=job, idempotency_key__in=[row.idempotency_key for row in rows]
    ).count()
