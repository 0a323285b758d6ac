"""Image ingestion: one upload, a multi-file upload, or a whole folder / S3 prefix.

Bytes are validated by :mod:`annotation.imaging` before anything is written, stored once under
the content-addressed key ``images/<sha256>`` (shared by every project that has them) and
recorded as an ``Image`` row. The same bytes in the same project are a "duplicate": the
existing row is returned and nothing is written.
"""

import datetime as dt
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.errors import DomainError, ImageRejected
from annotation.imaging import ImageInfo, inspect_image, safe_file_name
from annotation.models import Image, Project
from annotation.selectors.images import image_get_by_sha, images_by_sha
from annotation.services.image_removal import image_blobs_restore
from annotation.services.import_sources import ImportSource, TooLarge, list_names, open_source
from engine.models import Job
from engine.services.jobs import job_create, job_fail, job_progress, job_start, job_succeed
from storage.blobs import (
    BlobError,
    BlobNotFound,
    BlobStoreUnavailable,
    get_blob_store,
)

IMPORTED: Literal["imported"] = "imported"
DUPLICATE: Literal["duplicate"] = "duplicate"
REJECTED: Literal["rejected"] = "rejected"
Status = Literal["imported", "duplicate", "rejected"]

# A job row is updated at most this often (and every _PROGRESS_EVERY files).
_PROGRESS_SECONDS = 2.0
_PROGRESS_EVERY = 100
# Files queued to the import workers ahead of the one being recorded (and the most rows
# written in one transaction).
_LOOKAHEAD = 64
# Rejections listed in job.result; the counts are always complete.
_RESULT_REJECTED_LIMIT = 1000


def image_blob_key(sha256: str) -> str:
    """The content-addressed key of an image's original bytes."""
    return f"images/{sha256}"


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What happened to one file. ``image`` is set unless it was rejected."""

    file_name: str  # as given: the upload name, a path in the folder or a key under the prefix
    status: Status
    image: Image | None = None
    reason: str = ""


@dataclass(slots=True)
class ImportSummary:
    """Counts of one folder or S3 import, every rejected file with its reason, and its job."""

    source: str
    job_id: int
    imported: int = 0
    duplicate: int = 0
    skipped: int = 0  # hidden files, folder markers, non-regular files: not images, not errors
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)

    def add(self, outcome: IngestOutcome) -> None:
        if outcome.status == IMPORTED:
            self.imported += 1
        elif outcome.status == DUPLICATE:
            self.duplicate += 1
        else:
            self.rejected.append((outcome.file_name, outcome.reason))

    @property
    def line(self) -> str:
        return (
            f"imported {self.imported}, duplicate {self.duplicate}, rejected {len(self.rejected)}"
        )

    def as_dict(self) -> dict[str, Any]:
        listed = self.rejected[:_RESULT_REJECTED_LIMIT]
        return {
            "source": self.source,
            "imported": self.imported,
            "duplicate": self.duplicate,
            "rejected_count": len(self.rejected),
            "skipped": self.skipped,
            "rejected": [{"file_name": name, "reason": reason} for name, reason in listed],
            "rejected_truncated": len(listed) < len(self.rejected),
        }


def _reason(exc: ImageRejected) -> str:
    details = exc.details
    if isinstance(details, dict) and isinstance(details.get("reason"), str):
        return details["reason"]
    return exc.message


def _validate(*, data: bytes, file_name: str) -> tuple[str, ImageInfo]:
    name = safe_file_name(file_name)
    info = inspect_image(
        data,
        file_name=name,
        max_pixels=settings.MASKLOOP_MAX_IMAGE_PIXELS,
        max_bytes=settings.MASKLOOP_MAX_IMAGE_BYTES,
    )
    return name, info


def _put_blob(*, data: bytes, info: ImageInfo) -> None:
    """Store validated bytes under their hash unless they are there already.

    Blob before row: a row never points at missing bytes. If the row then fails, the blob is an
    orphan under its own hash, reused by the next import of the same bytes.
    """
    key = image_blob_key(info.sha256)
    store = get_blob_store()
    if not store.exists(key):
        store.put_bytes(key, data, content_type=info.content_type)


def _new_image(*, project: Project, name: str, info: ImageInfo) -> Image:
    return Image(
        project=project,
        blob_key=image_blob_key(info.sha256),
        sha256=info.sha256,
        width=info.width,
        height=info.height,
        file_name=name,
        format=info.format,
        byte_size=info.byte_size,
    )


def _record(*, project: Project, given: str, name: str, info: ImageInfo) -> IngestOutcome:
    """The row for stored bytes, or the existing one; call inside a transaction."""
    try:
        with transaction.atomic():
            image = _new_image(project=project, name=name, info=info)
            image.save(force_insert=True)
    except IntegrityError:  # the same bytes committed concurrently by another request
        image = Image.objects.get(project=project, sha256=info.sha256)
        return IngestOutcome(file_name=given, status=DUPLICATE, image=image)
    return IngestOutcome(file_name=given, status=IMPORTED, image=image)


def _store(
    *, project: Project, given: str, name: str, data: bytes, info: ImageInfo
) -> IngestOutcome:
    existing = image_get_by_sha(project=project, sha256=info.sha256)
    if existing is not None:
        return IngestOutcome(file_name=given, status=DUPLICATE, image=existing)
    _put_blob(data=data, info=info)
    return _record(project=project, given=given, name=name, info=info)


@transaction.atomic
def image_ingest(*, project: Project, data: bytes, file_name: str) -> IngestOutcome:
    """Validate and store one image; "imported" or "duplicate" (same bytes already there).

    Raises :class:`ImageRejected` (nothing written) for an unsafe name or unacceptable bytes.
    """
    since = timezone.now()
    name, info = _validate(data=data, file_name=file_name)
    outcome = _store(project=project, given=file_name, name=name, data=data, info=info)
    _restore_after_commit(since=since, stored=[(outcome, data)])
    return outcome


def _bytes_of(data: bytes) -> Callable[[], bytes | None]:
    return lambda: data


def _restore_after_commit(*, since: dt.datetime, stored: list[tuple[IngestOutcome, bytes]]) -> None:
    """Once the rows are committed, put back any blob a concurrent removal deleted (see
    annotation.services.image_removal)."""
    keys: dict[str, Callable[[], bytes | None]] = {
        image_blob_key(outcome.image.sha256): _bytes_of(data)
        for outcome, data in stored
        if outcome.status == IMPORTED and outcome.image is not None
    }
    if keys:
        transaction.on_commit(lambda: image_blobs_restore(keys=keys, since=since))


@transaction.atomic
def images_ingest_batch(*, project: Project, files: list[tuple[str, bytes]]) -> list[IngestOutcome]:
    """Ingest several uploaded files all-or-nothing, in the order given.

    Every file is validated first; if any is refused, :class:`ImageRejected` lists each refused
    file in ``details["rejected"]`` (``[{"file_name", "reason"}]``) and nothing is stored.
    The same bytes twice in one batch give "imported" then "duplicate".
    """
    if not files:
        raise DomainError("no files were uploaded")
    since = timezone.now()
    validated: list[tuple[str, str, bytes, ImageInfo]] = []
    problems: list[dict[str, str]] = []
    for given, data in files:
        try:
            name, info = _validate(data=data, file_name=given)
        except ImageRejected as exc:
            problems.append({"file_name": given, "reason": _reason(exc)})
            continue
        validated.append((given, name, data, info))
    if problems:
        listed = "; ".join(f"{p['file_name']}: {p['reason']}" for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ImageRejected(
            f"{len(problems)} of {len(files)} files rejected, nothing was imported: {listed}{more}",
            details={"rejected": problems},
        )
    outcomes = [
        _store(project=project, given=given, name=name, data=data, info=info)
        for given, name, data, info in validated
    ]
    _restore_after_commit(
        since=since,
        stored=[
            (outcome, data) for outcome, (_, _, data, _) in zip(outcomes, validated, strict=True)
        ],
    )
    return outcomes


# --- Folder and S3 imports ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A file read, validated and its blob stored: only its row is left to write."""

    given: str
    name: str
    info: ImageInfo


def _prepare(*, source: ImportSource, name: str) -> IngestOutcome | _Prepared:
    """Read, validate and store the blob of one file. Runs in a worker thread: no database."""

    def rejected(reason: str) -> IngestOutcome:
        return IngestOutcome(file_name=name, status=REJECTED, reason=reason)

    unsafe = source.unsafe_reason(name)
    if unsafe is not None:
        return rejected(unsafe)
    try:
        data = source.read(name, settings.MASKLOOP_MAX_IMAGE_BYTES)
    except TooLarge as exc:
        return rejected(str(exc))
    except BlobNotFound:
        return rejected("object disappeared while importing")
    except BlobStoreUnavailable:
        raise  # the store is down: fail the job, a rerun resumes
    except (OSError, ValueError, BlobError) as exc:  # unreadable file, refused key, denied
        return rejected(f"cannot be read: {exc}")
    try:
        stored_name, info = _validate(data=data, file_name=name)
    except ImageRejected as exc:
        return rejected(_reason(exc))
    _put_blob(data=data, info=info)
    return _Prepared(given=name, name=stored_name, info=info)


@transaction.atomic
def _commit(*, project: Project, ready: list[IngestOutcome | _Prepared]) -> list[IngestOutcome]:
    """Rows for a run of prepared files in one transaction (one lookup, one multi-row insert).

    Falls back to row by row when a concurrent import committed some of the same bytes.
    """
    prepared = [item for item in ready if isinstance(item, _Prepared)]
    known = images_by_sha(project=project, sha256s={p.info.sha256 for p in prepared})
    new: list[Image] = []
    outcomes: list[IngestOutcome] = []
    for item in ready:
        if isinstance(item, IngestOutcome):
            outcomes.append(item)
        elif item.info.sha256 in known:
            image = known[item.info.sha256]
            outcomes.append(IngestOutcome(file_name=item.given, status=DUPLICATE, image=image))
        else:
            image = known[item.info.sha256] = _new_image(
                project=project, name=item.name, info=item.info
            )
            new.append(image)
            outcomes.append(IngestOutcome(file_name=item.given, status=IMPORTED, image=image))
    try:
        with transaction.atomic():
            Image.objects.bulk_create(new)
    except IntegrityError:
        return [
            item if isinstance(item, IngestOutcome) else _store_prepared(project, item)
            for item in ready
        ]
    return outcomes


def _store_prepared(project: Project, item: _Prepared) -> IngestOutcome:
    existing = image_get_by_sha(project=project, sha256=item.info.sha256)
    if existing is not None:
        return IngestOutcome(file_name=item.given, status=DUPLICATE, image=existing)
    return _record(project=project, given=item.given, name=item.name, info=item.info)


ProgressCallback = Callable[[int, int, IngestOutcome], None]


def images_import(
    *,
    project: Project,
    source: str,
    user: User | None = None,
    progress: ProgressCallback | None = None,
    threads: int = 4,
) -> ImportSummary:
    """Import every file of a folder (recursively) or an ``s3://bucket/prefix``, as a job.

    Each file is "imported", "duplicate" or "rejected" with a reason; rejections do not stop
    the import. Hidden files and folders are skipped. ``threads`` workers read, validate and
    store blobs (about ``threads`` images in memory at once) while this thread writes the rows
    in path/key order. The run is a ``Job(kind="ingest")`` with progress; its ``result`` is
    :meth:`ImportSummary.as_dict`. ``progress(done, total, outcome)`` runs after every file.

    Deliberately not one transaction: rows commit in small runs as files are ready, so the
    job's progress is visible while it runs and a rerun after a crash resumes (files done come
    back as duplicates). Raises :class:`DomainError` for an unknown or unreadable source before
    anything is written; a store that fails mid-run fails the job and raises.
    """
    if threads < 1:
        raise DomainError(f"threads must be at least 1, got {threads}")
    files = open_source(source)
    names = list_names(files)
    job = job_create(
        kind=Job.Kind.INGEST,
        project=project,
        params={"source": source},
        created_by=user,
        total=len(names),
        message=f"importing {len(names)} files",  # where from: params (admins only)
    )
    job_start(job_id=job.pk)
    summary = ImportSummary(source=files.location, job_id=job.pk, skipped=files.skipped)
    for name, reason in files.unreadable:
        summary.add(IngestOutcome(file_name=name, status=REJECTED, reason=reason))
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest") as pool:
            pipeline = _pipeline(project=project, source=files, names=names, pool=pool)
            # closing(): on an error, queued reads are cancelled before the pool is joined.
            with closing(pipeline) as batches:
                _record_all(batches=batches, total=len(names), summary=summary, progress=progress)
    except BaseException as exc:
        job_fail(job_id=job.pk, error=exc)
        raise
    job_succeed(job_id=job.pk, result=summary.as_dict(), message=summary.line)
    return summary


def _pipeline(
    *, project: Project, source: ImportSource, names: list[str], pool: ThreadPoolExecutor
) -> Generator[list[IngestOutcome], None, None]:
    """Outcomes in ``names`` order, committed in runs of files the workers have finished.

    Up to ``_LOOKAHEAD`` files are queued ahead; only the ones a worker is reading hold their
    bytes (a prepared file keeps its hash and size, not its pixels), so memory stays at about
    ``threads`` images however many are queued.
    """
    pending: deque[Future[IngestOutcome | _Prepared]] = deque()
    queued = iter(names)
    since = timezone.now()

    def reader(name: str) -> Callable[[], bytes | None]:
        def read() -> bytes | None:
            try:
                return source.read(name, settings.MASKLOOP_MAX_IMAGE_BYTES)
            except (OSError, ValueError, BlobError, TooLarge):
                return None

        return read

    def refill() -> None:
        while len(pending) < _LOOKAHEAD:
            name = next(queued, None)
            if name is None:
                return
            pending.append(pool.submit(_prepare, source=source, name=name))

    try:
        refill()
        while pending:
            ready = [pending.popleft().result()]
            while pending and pending[0].done() and len(ready) < _LOOKAHEAD:
                ready.append(pending.popleft().result())
            refill()
            outcomes = _commit(project=project, ready=ready)
            image_blobs_restore(
                keys={
                    image_blob_key(item.info.sha256): reader(item.given)
                    for item, outcome in zip(ready, outcomes, strict=True)
                    if isinstance(item, _Prepared) and outcome.status == IMPORTED
                },
                since=since,
            )
            yield outcomes
    finally:
        for future in pending:
            future.cancel()


def _record_all(
    *,
    batches: Iterator[list[IngestOutcome]],
    total: int,
    summary: ImportSummary,
    progress: ProgressCallback | None,
) -> None:
    reported_at = time.monotonic()
    done = reported_done = 0
    for batch in batches:
        for outcome in batch:
            done += 1
            summary.add(outcome)
            if progress is not None:
                progress(done, total, outcome)
        now = time.monotonic()
        if done - reported_done >= _PROGRESS_EVERY or now - reported_at >= _PROGRESS_SECONDS:
            job_progress(job_id=summary.job_id, done=done, total=total, message=summary.line)
            reported_done, reported_at = done, now
