"""Projects and memberships: create or update a project, set or remove a member's role.

A project always keeps at least one admin once it has one: removing or demoting the last admin
is refused, so a project never becomes unmanageable by its members.
"""

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from annotation.errors import ConflictError, DomainError
from annotation.models import Membership, Project, Stage

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
    if stage not in Stage.values:
        raise DomainError(
            f"unknown stage {stage!r}; use one of {', '.join(Stage.values)}",
            details={"field": "stage"},
        )
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
