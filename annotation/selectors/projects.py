"""Reads scoped by project visibility: projects, members, images, masks, jobs, model versions.

Every ``*_for_user`` getter raises ``Http404`` for an object the user may not see, whether it
exists or not, so an outsider learns nothing about other projects.
"""

import datetime as dt
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import CharField, Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from annotation.ids import id_in_range
from annotation.models import Image, Mask, Membership, Project
from annotation.permissions import ADMIN, has_role, is_superuser
from engine.models import Job, ModelVersion

AnyUser = AbstractBaseUser | AnonymousUser


def projects_visible_to(*, user: AnyUser) -> QuerySet[Project]:
    """All projects for superusers, the projects they are members of for everyone else."""
    projects = Project.objects.select_related("deployed_version").order_by("name")
    if is_superuser(user):
        return projects
    if not user.is_authenticated:
        return projects.none()
    return projects.filter(memberships__user_id=user.pk)


def project_get_for_user(*, user: AnyUser, project_id: int) -> Project:
    project = projects_visible_to(user=user).filter(pk=project_id).first()
    if project is None:
        raise Http404("no such project")
    return project


def project_get_by_name(*, name: str) -> Project:
    """For management commands: the project called ``name`` (``Project.DoesNotExist`` if none)."""
    return Project.objects.get(name=name)


def _count(queryset: QuerySet[Any]) -> Coalesce:
    """A correlated ``COUNT(*)`` of ``queryset`` (already filtered on ``OuterRef("pk")``)."""
    counted = queryset.order_by().values("project_id").annotate(n=Count("id")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def projects_with_stats(*, user: AnyUser, now: dt.datetime | None = None) -> QuerySet[Project]:
    """Visible projects annotated with ``image_count``, ``images_done``,
    ``accepted_mask_count``, ``my_masks_today`` (masks the user made since midnight) and
    ``my_role``.

    Each count is its own correlated subquery, so no join multiplies the rows.
    """
    now = now or timezone.now()
    start_of_day = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    project = OuterRef("pk")
    user_id = int(user.pk) if user.pk is not None else 0
    member_role: Any = Subquery(
        Membership.objects.filter(project=project, user_id=user_id).values("role")[:1],
        output_field=CharField(),
    )
    if is_superuser(user):
        member_role = Coalesce(member_role, Value(ADMIN), output_field=CharField())
    return projects_visible_to(user=user).annotate(
        my_role=member_role,
        image_count=_count(Image.objects.filter(project=project)),
        images_done=_count(Image.objects.filter(project=project, status=Image.Status.DONE)),
        images_skipped=_count(Image.objects.filter(project=project, status=Image.Status.SKIPPED)),
        accepted_mask_count=_count(
            Mask.objects.filter(project=project, status=Mask.Status.ACCEPTED)
        ),
        my_masks_today=_count(
            Mask.objects.filter(project=project, annotator_id=user_id, created_at__gte=start_of_day)
        ),
    )


def project_get_with_stats(*, user: AnyUser, project_id: int) -> Project:
    """One visible project with the annotations of :func:`projects_with_stats`."""
    project = projects_with_stats(user=user).filter(pk=project_id).first()
    if project is None:
        raise Http404("no such project")
    return project


def project_members(*, project: Project) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    )


def membership_get(*, project: Project, user_id: int) -> Membership:
    if not id_in_range(user_id):  # no row can have it; the driver would overflow
        raise Http404("no such member")
    membership = (
        Membership.objects.select_related("user").filter(project=project, user_id=user_id).first()
    )
    if membership is None:
        raise Http404("no such member")
    return membership


def image_get_for_user(*, user: AnyUser, image_id: int) -> Image:
    visible = projects_visible_to(user=user).values("pk")
    image = Image.objects.select_related("project").filter(pk=image_id, project__in=visible).first()
    if image is None:
        raise Http404("no such image")
    return image


def mask_get_for_user(*, user: AnyUser, mask_id: int) -> Mask:
    """A mask of a visible project (with its image and project); 404 otherwise."""
    visible = projects_visible_to(user=user).values("pk")
    mask = (
        Mask.objects.select_related("image", "project")
        .filter(pk=mask_id, project__in=visible)
        .first()
    )
    if mask is None:
        raise Http404("no such mask")
    return mask


def image_accepted_masks(*, image: Image) -> QuerySet[Mask]:
    """The accepted masks of one image in id order (what the tool draws)."""
    return (
        Mask.objects.filter(image=image, status=Mask.Status.ACCEPTED)
        .select_related("image")
        .order_by("id")
    )


def project_masks(
    *,
    project: Project,
    image_id: int | None = None,
    status: str | None = None,
    source: str | None = None,
    stage: str | None = None,
    annotator_id: int | None = None,
    category_id: int | None = None,
) -> QuerySet[Mask]:
    """Masks of ``project`` in id order, optionally narrowed by the given filters."""
    filters = Q(project=project)
    if image_id is not None:
        filters &= Q(image_id=image_id)
    if status:
        filters &= Q(status=status)
    if source:
        filters &= Q(source=source)
    if stage:
        filters &= Q(stage=stage)
    if annotator_id is not None:
        filters &= Q(annotator_id=annotator_id)
    if category_id is not None:
        filters &= Q(category_id=category_id)
    return Mask.objects.filter(filters).select_related("image").order_by("id")


def project_jobs(
    *, project: Project, kind: str | None = None, status: str | None = None
) -> QuerySet[Job]:
    jobs = Job.objects.filter(project=project).select_related("created_by").order_by("-id")
    if kind:
        jobs = jobs.filter(kind=kind)
    if status:
        jobs = jobs.filter(status=status)
    return jobs


def job_get_for_user(*, user: AnyUser, job_id: int) -> Job:
    """A job of a visible project; jobs without a project are visible to superusers only."""
    job = Job.objects.select_related("project", "created_by").filter(pk=job_id).first()
    if job is None:
        raise Http404("no such job")
    if job.project is None:
        if not is_superuser(user):
            raise Http404("no such job")
        return job
    project_get_for_user(user=user, project_id=job.project.pk)
    return job


def job_file(*, job: Job, name: str) -> dict[str, Any]:
    """The ``{"name", "key", "bytes"}`` entry of a finished job's output file ``name``."""
    if job.status != Job.Status.SUCCEEDED:
        raise Http404("the job has no files until it succeeds")
    files = job.result.get("files") if isinstance(job.result, dict) else None
    for entry in files or []:
        if isinstance(entry, dict) and entry.get("name") == name and entry.get("key"):
            return entry
    raise Http404("no such file")


def project_model_versions(*, project: Project) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(project=project).select_related("project").order_by("-id")


def model_version_get_for_user(*, user: AnyUser, version_id: int) -> ModelVersion:
    visible = projects_visible_to(user=user).values("pk")
    version = (
        ModelVersion.objects.select_related("project")
        .filter(pk=version_id, project__in=visible)
        .first()
    )
    if version is None:
        raise Http404("no such model version")
    return version


# Job fields that name places on the server or in the object store (the folder or prefix an
# import read, an export's --out): shown to the project's admins, who chose them, and left out
# for the other members, who see the job's progress but need not learn the server's layout.
_LOCATION_PARAMS: dict[str, tuple[str, ...]] = {"ingest": ("source",), "export": ("out",)}
_LOCATION_RESULTS: dict[str, tuple[str, ...]] = {"export": ("out",)}


def job_may_manage(*, user: AnyUser, job: Job) -> bool:
    """Whether ``user`` administers ``job`` (its project's admins; superusers for jobs without
    a project): cancels it, downloads its files, sees where it read or wrote."""
    if job.project is None:
        return is_superuser(user)
    return has_role(user=user, project=job.project, role=ADMIN)


def job_shown_fields(*, job: Job, may_manage: bool) -> tuple[Any, Any]:
    """(params, result) of ``job`` as a member may see them."""
    params, result = job.params, job.result
    if may_manage:
        return params, result
    if isinstance(params, dict):
        hidden = _LOCATION_PARAMS.get(job.kind, ())
        params = {key: value for key, value in params.items() if key not in hidden}
    if isinstance(result, dict):
        hidden = _LOCATION_RESULTS.get(job.kind, ())
        result = {key: value for key, value in result.items() if key not in hidden}
    return params, result
