"""The checks of an export request, before anything is created: format and filters, the run
whose masks to export, the SA-1B shard size, the output location."""

import tempfile

from django.conf import settings

from annotation.errors import ExportRefused
from annotation.models import Category, Project
from engine.models import Job
from storage.blobs import LocalBlobStore, open_location


def export_choice(value: object, *, name: str, allowed: list[str] | tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ExportRefused(f"unknown {name} {value!r}; use one of: {', '.join(allowed)}")
    return value


def export_flag_checked(value: object, *, name: str) -> bool:
    if not isinstance(value, bool):
        raise ExportRefused(f"{name} must be true or false, got {value!r}")
    return value


def export_categories_checked(categories: object, *, project: Project) -> list[int] | None:
    """The ids of the categories of ``project`` whose masks to export (sorted), None for all
    masks, or ExportRefused."""
    if categories is None:
        return None
    if not isinstance(categories, list | tuple) or not categories:
        raise ExportRefused("categories must be a non-empty list of category ids")
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in categories):
        raise ExportRefused(f"categories must be category ids, got {categories!r}")
    wanted = sorted(set(categories))
    found = set(
        Category.objects.filter(project=project, pk__in=wanted).values_list("pk", flat=True)
    )
    missing = [c for c in wanted if c not in found]
    if missing:
        raise ExportRefused(
            f"not categories of project {project.name!r}: {', '.join(map(str, missing))}"
        )
    return wanted


_RUN_KINDS = (Job.Kind.AUTOMATIC, Job.Kind.PREFILL)


def export_run_id_checked(job_id: int | None, *, project: Project) -> int | None:
    """The id of a run of ``project`` whose masks to export, or ExportRefused."""
    if job_id is None:
        return None
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise ExportRefused(f"job must be a job id, got {job_id!r}")
    run = Job.objects.filter(pk=job_id, project=project).only("kind").first()
    if run is None:
        raise ExportRefused(f"job #{job_id} is not a job of project {project.name!r}")
    if run.kind not in _RUN_KINDS:
        raise ExportRefused(
            f"job #{job_id} is a {run.kind} job; only the masks of an automatic or prefill run "
            "can be exported by job"
        )
    return job_id


def export_shard_size_checked(shard_size: int | None) -> int:
    if shard_size is None:
        return int(settings.MASKLOOP_SA1B_SHARD_SIZE)
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ExportRefused(f"shard size must be a positive integer, got {shard_size!r}")
    return shard_size


def export_out_checked(out: str | None) -> str | None:
    """``out`` normalised (local paths made absolute), or ExportRefused with the reason."""
    if out is None:
        return None
    if not isinstance(out, str) or not out.strip():
        raise ExportRefused("the output location is empty: give a folder or s3://bucket/prefix")
    try:
        location = open_location(out)
    except ValueError as exc:
        raise ExportRefused(f"cannot export to {out!r}: {exc}") from exc
    if not isinstance(location, LocalBlobStore):
        return out
    folder = location.root
    if folder.exists() and not folder.is_dir():
        raise ExportRefused(f"cannot export to {out!r}: it exists and is not a folder")
    probe = folder if folder.exists() else folder.parent
    if not probe.is_dir():
        raise ExportRefused(f"cannot export to {out!r}: the folder {probe} does not exist")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ExportRefused(
            f"cannot export to {out!r}: the folder {probe} is not writable ({exc.strerror})"
        ) from exc
    return str(folder)
