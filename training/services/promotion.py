"""Promotion and rollback: which version a project serves, by an admin or by the policy.

The switch, its ``Deployment`` history row and the queueing of the new version's embeddings
are ``engine.services.deployments.deployment_switch`` (the registry's deploy paths use it too):
one transaction that locks the project row, so two admins promoting at once, or a promotion
racing the auto-policy or the embedding GC, are serialised and each records the version it
really replaced. This module decides *what* to deploy: a named version, the rollback target
(the version the live one replaced) or a round's child that beat its parent.
"""

import logging
import math

from django.contrib.auth.models import User
from django.db import transaction

from annotation.models import Project
from engine.models import Deployment, ModelVersion
from engine.services.deployments import PromotionRefused as PromotionRefused
from engine.services.deployments import deployment_switch

logger = logging.getLogger(__name__)

# Metrics where a smaller value is better (mean clicks to reach the target IoU).
_LOWER_IS_BETTER_PREFIX = "clicks_to_"


def rollback_target(*, project: Project) -> ModelVersion | None:
    """The version a rollback would deploy: the one the live version replaced when it was last
    promoted. None when the live version was never promoted (imported and deployed directly,
    or only reached by rollbacks), or when that version is gone or retired."""
    current = project.deployed_version_id
    if current is None:
        return None
    last = (
        Deployment.objects.filter(project_id=project.pk, version_id=current)
        .exclude(action=Deployment.Action.ROLLBACK)
        .select_related("previous_version")
        .order_by("-id")
        .first()
    )
    if last is None or last.previous_version is None:
        return None
    if last.previous_version.status != ModelVersion.Status.READY:
        return None
    return last.previous_version


def version_promote(*, version: ModelVersion, user: User | None, reason: str) -> ModelVersion:
    """Deploy ``version`` in its project (atomically) and record it; PromotionRefused when it
    is deployed already, DeployRefused when it is not ready."""
    return _deploy(version=version, user=user, reason=reason, action=Deployment.Action.PROMOTE)


def version_rollback(*, project: Project, user: User | None, reason: str = "") -> ModelVersion:
    """Deploy again the version that the live one replaced (see :func:`rollback_target`);
    returns it. PromotionRefused when there is none."""
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        target = rollback_target(project=locked)
        if target is None:
            raise PromotionRefused(
                f"project {locked.name!r} has nothing to roll back to: its deployed version "
                "was not promoted over a version that is still ready"
            )
        deployed = _deploy(
            version=target,
            user=user,
            reason=reason or f"rollback from version {locked.deployed_version_id}",
            action=Deployment.Action.ROLLBACK,
        )
    project.deployed_version = deployed
    return deployed


def version_auto_promote(*, version: ModelVersion, margin: float, metric: str = "miou@1") -> bool:
    """Promote ``version`` when it beats its parent on the validation split by ``margin``:
    ``validation[metric] >= parent_validation[metric] + margin`` (for ``clicks_to_*``, where
    fewer is better: ``<= parent - margin``). Only a child of the deployed version is
    considered, so a policy never replaces a version the child was not compared with.

    Returns whether it promoted. ValueError for a negative or non-finite margin or a metric
    the version's validation does not have; False (logged) when the version has no
    validation figures or is not a child of the deployed version.
    """
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    validation = version.metrics.get("validation") or {}
    parent_validation = version.metrics.get("parent_validation") or {}
    if not validation or not parent_validation:
        logger.info("version %s has no validation figures: not auto-promoted", version.pk)
        return False
    if metric not in validation or metric not in parent_validation:
        raise ValueError(
            f"unknown metric {metric!r}; the validation figures have {sorted(validation)}"
        )
    child, parent = float(validation[metric]), float(parent_validation[metric])
    if metric.startswith(_LOWER_IS_BETTER_PREFIX):
        better = child <= parent - margin
    else:
        better = child >= parent + margin
    if not better:
        logger.info(
            "version %s not auto-promoted: %s %.4f vs parent %.4f (margin %.4f)",
            version.pk, metric, child, parent, margin,
        )  # fmt: skip
        return False
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=version.project_id)
        if version.parent_id is None or locked.deployed_version_id != version.parent_id:
            logger.info(
                "version %s not auto-promoted: its parent %s is not the deployed version %s",
                version.pk, version.parent_id, locked.deployed_version_id,
            )  # fmt: skip
            return False
        _deploy(
            version=version,
            user=None,
            reason=f"{metric} {child:.4f} vs parent {parent:.4f} (margin {margin:g})",
            action=Deployment.Action.AUTO,
        )
    return True


def _deploy(*, version: ModelVersion, user: User | None, reason: str, action: str) -> ModelVersion:
    return deployment_switch(version=version, user=user, reason=reason, action=action)
