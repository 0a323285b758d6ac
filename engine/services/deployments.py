"""Which model version a project serves: the switch, its history, and the new embeddings.

Every way of deploying a version — promotion, rollback, auto-promotion after a round, the
registry's ``deploy`` API, ``import_checkpoint --deploy``, the admin action — goes through
:func:`deployment_switch`: one transaction that locks the project row (``SELECT ... FOR
UPDATE``), switches ``Project.deployed_version`` (:func:`model_version_deploy` checks that the
version belongs to the project and is ready) and appends a ``Deployment`` row with the action,
the user, the reason and the version that was live before (what a rollback goes back to). Two
admins deploying at once are serialised, and each row records the version it really replaced.

Nothing else has to happen for the switch to reach every process: the decode and embedding
endpoints read the project row on every request, and the per-process model and embedding
caches are keyed by version id. Once the transaction has committed, the new version's
embeddings are queued (``engine.services.redeploy``), images annotators are working on first.

``model_version_deploy`` alone is the bare switch without history, for fixtures and the
services above.
"""

import logging

from django.contrib.auth.models import User
from django.db import transaction

from annotation.errors import DomainError
from annotation.models import Project
from engine.models import Deployment, ModelVersion

logger = logging.getLogger(__name__)


class DeployRefused(DomainError):
    """The version cannot be deployed in this project."""

    code = "deploy_refused"


class PromotionRefused(DomainError):
    """The version cannot be promoted, or there is nothing to roll back to (nothing changed)."""

    status_code = 409
    code = "promotion_refused"


@transaction.atomic
def model_version_deploy(*, project: Project, version: ModelVersion) -> ModelVersion:
    """Make ``version`` the one the project's tool and workers use (atomically), without a
    ``Deployment`` row or embeddings: use :func:`deployment_switch` for a real deployment."""
    locked = Project.objects.select_for_update().get(pk=project.pk)
    if version.project_id != locked.pk:
        raise DeployRefused(
            f"model version {version.pk} does not belong to project {locked.name!r}"
        )
    if version.status != ModelVersion.Status.READY:
        raise DeployRefused(f"model version {version.pk} is {version.status}, not ready")
    locked.deployed_version = version
    locked.save(update_fields=["deployed_version"])
    project.deployed_version = version
    return version


@transaction.atomic
def deployment_switch(
    *,
    version: ModelVersion,
    user: User | None,
    reason: str,
    action: str = Deployment.Action.PROMOTE,
    refuse_same: bool = True,
) -> ModelVersion:
    """Deploy ``version`` in its project, record the ``Deployment`` and queue the version's
    embeddings once committed.

    A version that is deployed already raises PromotionRefused, or, with
    ``refuse_same=False`` (re-deploying through the registry API or an import, which are
    idempotent), returns it unchanged with no new row. DeployRefused when it is not ready.
    """
    locked = Project.objects.select_for_update().get(pk=version.project_id)
    if locked.deployed_version_id == version.pk:
        if not refuse_same:
            return version
        raise PromotionRefused(
            f"model version {version.pk} is deployed in project {locked.name!r} already"
        )
    previous_id = locked.deployed_version_id
    model_version_deploy(project=locked, version=version)
    if ModelVersion.project.is_cached(version):  # the caller's copy says what is live, too
        version.project.deployed_version = version
    Deployment.objects.create(
        project=locked,
        version=version,
        previous_version_id=previous_id,
        action=action,
        user=user if user is not None and user.pk else None,
        reason=reason[:500],
    )
    logger.info(
        "project %s: version %s %s (was %s) by %s", locked.pk, version.pk, action, previous_id, user
    )
    version_id = version.pk
    user_id = user.pk if user is not None and user.pk else None

    def start_embeddings() -> None:
        from engine.services.redeploy import redeploy_embeddings_start  # imports the queue

        redeploy_embeddings_start(version_id=version_id, user_id=user_id)

    # robust: the deployment stands even when the broker is down; an admin can rerun it.
    transaction.on_commit(start_embeddings, robust=True)
    return version
