"""Dataset export as a Job: COCO (RLE segmentations) or SA-1B (per-image JSON in tar shards).

``export_start`` checks every parameter before it creates anything, then creates the Job and
queues ``annotation.tasks.export_dataset``. ``export_run`` does the work: the selectors stream
mask rows in id order (server-side cursor), plain records go to the storage format writers, the
output is written to a temp file under ``VAR_DIR`` and put to the blob store under
``exports/<job_id>/<name>`` and, when asked, to an ``out`` folder or ``s3://`` location. Memory
stays flat however many masks there are; a failed or cancelled run removes what it published.
"""

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from annotation.errors import ExportRefused
from annotation.models import Mask, Project, Stage
from annotation.selectors.categories import project_categories
from annotation.selectors.masks import (
    export_counts,
    export_has_uncategorized,
    images_for_export,
    mask_groups_for_export,
    masks_for_export,
)
from annotation.services.export_params import (
    export_categories_checked,
    export_choice,
    export_flag_checked,
    export_out_checked,
    export_run_id_checked,
    export_shard_size_checked,
)
from engine.models import Job
from engine.services.jobs import (
    JobCancelled,
    job_create,
    job_enqueue,
    job_progress,
    job_start,
    job_succeed,
)
from storage.blobs import BlobStore, get_blob_store, open_location
from storage.formats import CocoWriter, Sa1bShardWriter

logger = logging.getLogger(__name__)

FORMATS = ("coco", "sa1b")
PROGRESS_EVERY = 500  # masks between two progress reports (each also checks for cancellation)
_CHUNK = 2000  # rows fetched per round trip from the server-side cursor
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif"}
# Masks without a category: the only category of a project that has none (id 1, as always),
# id 0 beside a project's own (whose COCO ids start at 1). Imports read the flag as "none".
_AGNOSTIC_ID = 1
_CATEGORY: dict[str, Any] = {
    "id": _AGNOSTIC_ID,
    "name": "object",
    "supercategory": "object",
    "class_agnostic": True,
}

ProgressCallback = Callable[[int, int], None]


# --- start -----------------------------------------------------------------------------------


@transaction.atomic
def export_start(
    *,
    project: Project,
    fmt: str,
    user: User | None = None,
    status: str = Mask.Status.ACCEPTED,
    stage: str | None = None,
    source: str | None = None,
    out: str | None = None,
    shard_size: int | None = None,
    include_images: bool = True,
    job_id: int | None = None,
    reviewed: bool = False,
    categories: list[int] | None = None,
    enqueue: bool = True,
) -> Job:
    """Check the request, create the export Job and (unless ``enqueue=False``, for callers that
    run it in-process) queue it on the ``default`` queue once the transaction commits.

    ``job_id`` selects the masks one automatic or prefill run of this project wrote (its
    SA-1B export); the other filters still apply (a prefill run's masks are ``proposed``).
    ``reviewed`` keeps only the masks a reviewer approved or fixed (QA-passed data);
    ``categories`` (category ids of the project) only the masks of those categories.

    Raises ExportRefused, creating nothing, for an unknown format/status/stage/source, a bad
    shard size, a ``job_id`` that is not an automatic or prefill run of this project, a
    category that is not the project's, or an
    ``out`` that is neither a writable local folder (or one whose parent exists and is
    writable) nor a well-formed ``s3://bucket/prefix``.
    """
    if project.pk is None:
        raise ExportRefused("the project is not saved")
    # Under the project's row lock, as image removals (which refuse while an export is queued).
    project = Project.objects.select_for_update().get(pk=project.pk)
    params = {
        "format": export_choice(fmt, name="format", allowed=FORMATS),
        "status": export_choice(status, name="status", allowed=Mask.Status.values),
        "stage": None
        if stage is None
        else export_choice(stage, name="stage", allowed=Stage.values),
        "source": None
        if source is None
        else export_choice(source, name="source", allowed=Mask.Source.values),
        "out": export_out_checked(out),
        "shard_size": export_shard_size_checked(shard_size),
        "include_images": bool(include_images),
        "job_id": export_run_id_checked(job_id, project=project),
        "reviewed": export_flag_checked(reviewed, name="reviewed"),
        "categories": export_categories_checked(categories, project=project),
    }
    job = job_create(
        kind=Job.Kind.EXPORT,
        project=project,
        params=params,
        created_by=user,
        message=f"{params['format']} export queued",
    )
    if enqueue:
        from annotation.tasks import export_dataset  # the task module imports this one

        job_enqueue(job=job, task=export_dataset, queue="default")
    return job


# --- run -------------------------------------------------------------------------------------


def export_run(
    *, job_id: int, task_id: str = "", on_progress: ProgressCallback | None = None
) -> dict[str, Any] | None:
    """Run export job ``job_id``; return ``job.result``, or None when there was nothing to do
    (the job had finished already) or it was cancelled. Safe to rerun.

    Any other error propagates after the partial outputs are removed; the caller marks the job
    failed (the task through ``job_fail``) or retries it.
    """
    job = job_start(job_id=job_id, task_id=task_id)
    if job is None:
        return None
    run = _ExportRun(job, on_progress=on_progress)
    try:
        result = run.execute()
    except JobCancelled:
        logger.info("export job %s was cancelled; its partial outputs are removed", job_id)
        run.remove_outputs()
        return None
    except BaseException:
        run.remove_outputs()
        raise
    finally:
        run.remove_workdir()
    job_succeed(
        job_id=job_id,
        result=result,
        message=f"exported {result['annotations']} masks of {result['images']} images",
    )
    return result


class _ExportRun:
    """One attempt of one export job: its temp folder, destinations and published files."""

    def __init__(self, job: Job, *, on_progress: ProgressCallback | None) -> None:
        if job.project is None:
            raise ValueError(f"export job {job.pk} has no project")
        self.job = job
        self.project: Project = job.project
        self.params: dict[str, Any] = job.params
        self.filters = {
            "project": self.project,
            "status": self.params["status"],
            "stage": self.params["stage"],
            "source": self.params["source"],
            "job_id": self.params.get("job_id"),  # absent in jobs from before run exports
            "reviewed": bool(self.params.get("reviewed", False)),  # absent in older jobs
            "category_ids": self.params.get("categories"),
        }
        self.store = get_blob_store()
        out = self.params.get("out")
        self.destination: BlobStore | None = open_location(out) if out else None
        self.prefix = f"exports/{job.pk}/"
        self.on_progress = on_progress
        self.files: list[dict[str, Any]] = []
        self.published: list[str] = []
        self.done = 0
        self.total = 0
        tmp_root = Path(settings.VAR_DIR) / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"export-{job.pk}-", dir=tmp_root))

    def execute(self) -> dict[str, Any]:
        if self.job.attempts > 1:
            self._remove_previous_attempt()
        _, self.total = export_counts(**self.filters)
        self._report()
        write = self._write_coco if self.params["format"] == "coco" else self._write_sa1b
        counts = write()
        self._report()
        return {
            "format": self.params["format"],
            "files": self.files,
            "images": counts["images"],
            "annotations": counts["annotations"],
            "out": self.params.get("out"),
        }

    # -- COCO ---------------------------------------------------------------------------------

    def _write_coco(self) -> dict[str, int]:
        name = f"{slugify(self.project.name) or 'project'}-coco.json"
        path = self.workdir / name
        info = {
            "description": f"maskloop export of project {self.project.name}",
            "project": self.project.name,
            "project_id": self.project.pk,
            "job_id": self.job.pk,
            "date_created": timezone.now().isoformat(),
            "year": timezone.now().year,
            "version": "1.0",
            "filters": self._described_filters(),
        }
        # COCO wants every image before the first annotation, so images and masks are two
        # queries; a mask selected in between (e.g. just accepted) may sit on an image the first
        # pass did not list. One byte per image id remembers which images were written.
        listed = bytearray()
        categories, coco_ids = self._coco_categories()
        with path.open("wb") as fh, CocoWriter(fh, info=info, categories=categories) as writer:
            for image in images_for_export(**self.filters).iterator(chunk_size=_CHUNK):
                writer.add_image(
                    {
                        "id": image["id"],
                        "width": image["width"],
                        "height": image["height"],
                        "file_name": image["file_name"] or _stored_name(image),
                        "sha256": image["sha256"],
                    }
                )
                listed.extend(bytes(image["id"] + 1 - len(listed)))
                listed[image["id"]] = 1
            for mask in masks_for_export(**self.filters).iterator(chunk_size=_CHUNK):
                self._advance()
                if mask["image_id"] < len(listed) and listed[mask["image_id"]]:
                    writer.add_annotation(_coco_annotation(mask, coco_ids))
            counts = writer.close()
        self._publish(path, name, content_type="application/json")
        path.unlink()
        return counts

    def _coco_categories(self) -> tuple[list[dict[str, Any]], dict[int | None, int]]:
        """The file's categories, and the COCO id of each mask category (None: no category)."""
        own = list(project_categories(project=self.project))
        chosen = self.filters["category_ids"]
        if chosen is not None:  # only those; an export of some categories has no "none"
            own = [c for c in own if c.pk in chosen]
        if not own and chosen is None:
            return [_CATEGORY], {None: _AGNOSTIC_ID}
        listed = [
            {"id": c.coco_id, "name": c.name, "supercategory": "object", "color": c.color}
            for c in own
        ]
        coco_ids: dict[int | None, int] = {c.pk: c.coco_id for c in own}
        if export_has_uncategorized(**self.filters):
            listed.insert(0, {**_CATEGORY, "id": 0})
            coco_ids[None] = 0
        return listed, coco_ids

    def _described_filters(self) -> dict[str, Any]:
        described = {key: self.params[key] for key in ("status", "stage", "source")}
        if self.filters["job_id"] is not None:
            described["job_id"] = self.filters["job_id"]  # the export of one run
        if self.filters["reviewed"]:
            described["reviewed"] = True
        if self.filters["category_ids"] is not None:
            described["categories"] = [
                c.coco_id
                for c in project_categories(project=self.project)
                if c.pk in self.filters["category_ids"]
            ]
        return described

    # -- SA-1B --------------------------------------------------------------------------------

    def _write_sa1b(self) -> dict[str, int]:
        include_images = bool(self.params["include_images"])
        with Sa1bShardWriter(
            self.workdir / "shards",
            images_per_shard=int(self.params["shard_size"]),
            on_shard_closed=self._shard_closed,
        ) as writer:
            for image, masks in mask_groups_for_export(**self.filters, chunk_size=_CHUNK):
                size = [image["height"], image["width"]]
                writer.add_image(
                    {
                        "image_id": image["id"],
                        "width": image["width"],
                        "height": image["height"],
                        "file_name": f"sa_{image['id']}.{_extension(image)}",
                    },
                    self._sa1b_annotations(masks, size),
                    image_bytes=self.store.get_bytes(image["blob_key"]) if include_images else None,
                )
            return writer.close()

    def _sa1b_annotations(
        self, masks: Iterator[dict[str, Any]], size: list[int]
    ) -> Iterator[dict[str, Any]]:
        for mask in masks:
            yield {
                "id": mask["id"],
                "segmentation": {"size": size, "counts": mask["rle_counts"]},
                "bbox": mask["bbox"],
                "area": mask["area"],
                "predicted_iou": mask["predicted_iou"],
                "stability_score": mask["stability_score"],
                "crop_box": mask["crop_box"],
                "point_coords": mask["point_coords"],
            }
            self._advance()

    def _shard_closed(self, path: Path) -> None:
        self._publish(path, path.name, content_type="application/x-tar")
        path.unlink()

    # -- publishing, progress, cleanup --------------------------------------------------------

    def _publish(self, path: Path, name: str, *, content_type: str) -> None:
        """Put the finished file ``path`` to the blob store and to ``out`` when given."""
        key = self.prefix + name
        self.published.append(name)  # before the upload, so a failure midway is cleaned up
        with path.open("rb") as fh:
            size = self.store.put_file(key, fh, content_type=content_type)
            if self.destination is not None:
                fh.seek(0)
                self.destination.put_file(name, fh, content_type=content_type)
        self.files.append({"name": name, "key": key, "bytes": size})

    def _advance(self) -> None:
        self.done += 1
        if self.done % PROGRESS_EVERY == 0:
            self._report()

    def _report(self) -> None:
        job_progress(
            job_id=self.job.pk,
            done=self.done,
            total=self.total,
            message=f"{self.done} of {self.total} masks written",
        )
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    def _remove_previous_attempt(self) -> None:
        """A redelivered job starts clean: drop what an interrupted attempt published."""
        for key in list(self.store.list(self.prefix)):
            self._delete(key.removeprefix(self.prefix))

    def remove_outputs(self) -> None:
        for name in self.published:
            self._delete(name)
        self.files, self.published = [], []

    def _delete(self, name: str) -> None:
        # Best effort: a cleanup failure must not hide the error that caused the cleanup.
        with contextlib.suppress(Exception):
            self.store.delete(self.prefix + name)
        if self.destination is not None:
            with contextlib.suppress(Exception):
                self.destination.delete(name)

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _extension(image: dict[str, Any]) -> str:
    return _EXTENSIONS.get(str(image["format"]).upper(), "bin")


def _stored_name(image: dict[str, Any]) -> str:
    return f"{image['sha256']}.{_extension(image)}"


def _coco_annotation(mask: dict[str, Any], coco_ids: dict[int | None, int]) -> dict[str, Any]:
    record = {
        "id": mask["id"],
        "image_id": mask["image_id"],
        # A category made after the listing above (rare: exports run for minutes) reads as none.
        "category_id": coco_ids.get(mask["category_id"], coco_ids.get(None, 0)),
        "segmentation": {"size": [mask["height"], mask["width"]], "counts": mask["rle_counts"]},
        "area": mask["area"],
        "bbox": mask["bbox"],
        "iscrowd": 0,
        "stage": mask["stage"],
        "source": mask["source"],
    }
    for key in ("predicted_iou", "stability_score"):
        if mask[key] is not None:
            record[key] = mask[key]
    return record
