"""Projects and memberships: create or update a project, move it between the data engine's
stages, set or remove a member's role.

A project always keeps at least one admin once it has one: removing or demoting the last admin
is refused, so a project never becomes unmanageable by its members.

Stage changes are an admin's decision; each one is recorded in Django's admin log
(``LogEntry``: who, when, from which stage to which), which the project page and the admin
site's history show. Moving a project to semi-automatic needs a deployed model version and
starts a prefill run over the images still to do (``annotation.services.semi_automatic``).
"""

import json
from dataclasses import dataclass

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from annotation.errors import ConflictError, DomainError
from annotation.models import Membership, Project, Stage
from annotation.permissions import ADMIN, has_role
from engine.models import Job

# Marks the admin-log rows written by stage changes (the change message is this JSON object).
STAGE_LOG_KEY = "maskloop_stage"

_NAME_MAX = Project._meta.get_field("name").max_length or 200


def _clean_name(name: str) -> str:
    """``name`` without surrounding blanks; :class:`DomainError` when empty or too long."""
    clean_name = name.strip()
    if not clean_name:
        raise DomainError("a project needs a name", details={"field": "name"})
    if len(clean_name) > _NAME_MAX:
        raise DomainError(
            f"project name is {len(clean_name)} characters, the limit is {_NAME_MAX}",
            details={"field": "name"},
        )
    return clean_name


@transaction.atomic
def project_create(
    *,
    name: str,
    description: str = "",
    stage: str = Stage.ASSISTED_MANUAL,
    creator: User | None = None,
) -> Project:
    """Create a project; ``creator`` (if given) becomes its first admin.

    Raises :class:`DomainError` for an empty or too long name or an unknown stage, and
    :class:`ConflictError` when a project with that name exists.
    """
    clean_name = _clean_name(name)
    check_stage(stage)
    if Project.objects.filter(name=clean_name).exists():
        raise ConflictError(f"a project named {clean_name!r} already exists")
    try:
        with transaction.atomic():
            project = Project.objects.create(
                name=clean_name, description=description.strip(), stage=stage
            )
    except IntegrityError as exc:  # created by a concurrent request since the check above
        raise ConflictError(f"a project named {clean_name!r} already exists") from exc
    if creator is not None:
        Membership.objects.create(project=project, user=creator, role=Membership.Role.ADMIN)
    return project


@transaction.atomic
def project_update(
    *, project: Project, name: str | None = None, description: str | None = None
) -> Project:
    """Rename ``project`` and/or change its description; ``None`` leaves a field as it is.

    Raises :class:`DomainError` for an empty or too long name and :class:`ConflictError` when
    another project already has that name; nothing is saved then.
    """
    update_fields: list[str] = []
    if name is not None:
        clean_name = _clean_name(name)
        if Project.objects.filter(name=clean_name).exclude(pk=project.pk).exists():
            raise ConflictError(f"a project named {clean_name!r} already exists")
        if clean_name != project.name:
            project.name = clean_name
            update_fields.append("name")
    if description is not None and description.strip() != project.description:
        project.description = description.strip()
        update_fields.append("description")
    if not update_fields:
        return project
    try:
        with transaction.atomic():
            project.save(update_fields=update_fields)
    except IntegrityError as exc:  # another project took the name since the check above
        taken = project.name
        project.refresh_from_db(fields=update_fields)
        raise ConflictError(f"a project named {taken!r} already exists") from exc
    return project


class NoModelForStage(DomainError):
    """A stage that needs a deployed model version was asked for a project without one."""

    status_code = 409
    code = "no_deployed_version"


@dataclass(frozen=True)
class StageChange:
    """What :func:`project_stage_change` did: the project (saved), the stage it left, and the
    prefill run it started (None when there was nothing to prefill or the stage stayed)."""

    project: Project
    previous: str
    prefill_job: Job | None


def check_stage(stage: object) -> str:
    """``stage`` when it is a known stage; :class:`DomainError` naming the choices otherwise."""
    if not isinstance(stage, str) or stage not in Stage.values:
        raise DomainError(
            f"unknown stage {stage!r}; use one of {', '.join(Stage.values)}",
            details={"field": "stage"},
        )
    return stage


def _log_stage(*, project: Project, user: User, previous: str, stage: str) -> None:
    LogEntry.objects.create(
        user=user,
        content_type=ContentType.objects.get_for_model(Project),
        object_id=str(project.pk),
        object_repr=str(project)[:200],
        action_flag=CHANGE,
        change_message=json.dumps({STAGE_LOG_KEY: {"from": previous, "to": stage}}),
    )


@transaction.atomic
def project_stage_change(
    *, project: Project, stage: str, user: User | AbstractBaseUser | AnonymousUser
) -> StageChange:
    """Move ``project`` to ``stage`` (project admins and superusers; else PermissionDenied).

    Unknown stage: :class:`DomainError`. Semi-automatic without a deployed model version:
    :class:`NoModelForStage` (409). Either way nothing changes. Asking for the stage the
    project is in changes nothing and records nothing. Entering semi-automatic starts a prefill
    run over the todo images that have no prefilled masks yet (none when there are none).
    """
    # Imported here: semi_automatic uses the engine's automatic runs, which import this app.
    from annotation.services.semi_automatic import prefill_start, prefill_todo_image_ids

    check_stage(stage)
    if not has_role(user=user, project=project, role=ADMIN) or not isinstance(user, User):
        raise PermissionDenied("only project admins change a project's stage")
    locked = Project.objects.select_for_update().get(pk=project.pk)
    previous = locked.stage
    if previous == stage:
        return StageChange(project=locked, previous=previous, prefill_job=None)
    if stage == Stage.SEMI_AUTOMATIC and locked.deployed_version_id is None:
        raise NoModelForStage(
            f"project {locked.name!r} has no deployed model version: semi-automatic prefill "
            "needs one (import or promote a model first)"
        )
    locked.stage = stage
    locked.save(update_fields=["stage"])
    _log_stage(project=locked, user=user, previous=previous, stage=stage)
    job = None
    if stage == Stage.SEMI_AUTOMATIC:
        todo = prefill_todo_image_ids(project=locked)
        if todo:
            job = prefill_start(project=locked, user=user, image_ids=todo)
    project.stage = locked.stage
    return StageChange(project=locked, previous=previous, prefill_job=job)


def project_stage_set(
    *, project: Project, stage: str, user: User | AbstractBaseUser | AnonymousUser
) -> Project:
    """Move ``project`` to ``stage``; see :func:`project_stage_change` (which also says which
    prefill run it started)."""
    return project_stage_change(project=project, stage=stage, user=user).project


def _check_role(role: str) -> None:
    if role not in Membership.Role.values:
        raise DomainError(
            f"unknown role {role!r}; use one of {', '.join(Membership.Role.values)}",
            details={"field": "role"},
        )


def _other_admins_exist(*, project: Project, user: User) -> bool:
    """Whether an admin other than ``user`` remains; locks the admin rows against races."""
    admins = list(
        Membership.objects.select_for_update()
        .filter(project=project, role=Membership.Role.ADMIN)
        .values_list("user_id", flat=True)
    )
    return any(user_id != user.pk for user_id in admins)


@transaction.atomic
def membership_set(*, project: Project, user: User, role: str) -> Membership:
    """Make ``user`` a member of ``project`` with ``role``, or change their role.

    Raises :class:`DomainError` for an unknown role or for demoting the project's last admin.
    """
    _check_role(role)
    membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
    if membership is None:
        try:
            with transaction.atomic():
                return Membership.objects.create(project=project, user=user, role=role)
        except IntegrityError:  # added concurrently: fall through and update that row
            membership = Membership.objects.select_for_update().get(project=project, user=user)
    if membership.role == role:
        return membership
    if membership.role == Membership.Role.ADMIN and not _other_admins_exist(
        project=project, user=user
    ):
        raise DomainError(
            f"{user.get_username()} is the last admin of {project.name!r}; "
            "make someone else admin first"
        )
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, project: Project, user: User) -> None:
    """Remove ``user`` from ``project``.

    Raises :class:`DomainError` when they are not a member or are the project's last admin.
    """
    membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
    if membership is None:
        raise DomainError(f"{user.get_username()} is not a member of {project.name!r}")
    if membership.role == Membership.Role.ADMIN and not _other_admins_exist(
        project=project, user=user
    ):
        raise DomainError(
            f"{user.get_username()} is the last admin of {project.name!r}; "
            "make someone else admin first"
        )
    membership.delete()
