"""The data-engine dashboard: per round, how fast annotators were and how good the model was.

A *round* here is a model version of the project: the ones retrain rounds made (``round`` 1, 2,
…) and the imported ones (the seed) as round 0. For each:

- annotation speed with that version: masks/image, s/mask, clicks/mask of the masks made with
  it (``Mask.model_version``: set for model-assisted masks; annotator set, accepted or later
  rejected, as on the stats page). Aggregated by the database in one grouped query;
- model quality from ``ModelVersion.metrics`` (contract in the issue): validation mIoU@1, @3,
  clicks to 0.9 and training seconds. A version without its own validation figures (the seed)
  shows its ``parent_validation`` as measured in its first child's round, on the same split;
- the lineage: the parent tree in depth-first order with every deployment of each version.
"""

from typing import Any, TypedDict

from django.db.models import Avg, Count

from annotation.models import Mask, Project
from engine.models import Deployment, ModelVersion


class RoundRow(TypedDict):
    version_id: int
    name: str
    round: int
    label: str
    status: str
    is_deployed: bool
    parent_id: int | None
    masks: int
    images: int
    masks_per_image: float | None
    seconds_per_mask: float | None
    clicks_per_mask: float | None
    miou_1: float | None
    miou_3: float | None
    clicks_to_target: float | None
    metrics_from_round: int | None  # the round whose evaluation gave the figures
    training_seconds: float | None


class DeploymentRow(TypedDict):
    id: int
    version_id: int
    previous_version_id: int | None
    action: str
    user: str | None
    reason: str
    created_at: str


class LineageNode(TypedDict):
    version_id: int
    name: str
    label: str
    depth: int
    parent_id: int | None
    status: str
    is_deployed: bool
    deployments: list[DeploymentRow]


class Dashboard(TypedDict):
    deployed_version_id: int | None
    rounds: list[RoundRow]
    lineage: list[LineageNode]
    deployments: list[DeploymentRow]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _label(version: ModelVersion) -> str:
    return f"r{version.round or 0} · v{version.pk}"


def _quality(
    version: ModelVersion, children: list[ModelVersion]
) -> tuple[dict[str, Any], int | None]:
    """(validation figures, the round that measured them) for ``version``."""
    own = version.metrics.get("validation")
    if own:
        return own, version.round
    for child in children:  # oldest first: the earliest round that evaluated it as a parent
        measured = child.metrics.get("parent_validation")
        if measured:
            return measured, child.round
    return {}, None


def _speed(project: Project) -> dict[int, dict[str, Any]]:
    rows = (
        Mask.objects.filter(
            project=project,
            model_version__isnull=False,
            annotator__isnull=False,
            status__in=[Mask.Status.ACCEPTED, Mask.Status.REJECTED],
        )
        .order_by()
        .values("model_version_id")
        .annotate(
            masks=Count("id"),
            images=Count("image_id", distinct=True),
            seconds_per_mask=Avg("seconds_spent"),
            clicks_per_mask=Avg("clicks"),
        )
    )
    return {row["model_version_id"]: dict(row) for row in rows}


def _deployment_row(deployment: Deployment) -> DeploymentRow:
    return {
        "id": deployment.pk,
        "version_id": deployment.version_id,
        "previous_version_id": deployment.previous_version_id,
        "action": deployment.action,
        "user": deployment.user.get_username() if deployment.user else None,
        "reason": deployment.reason,
        "created_at": deployment.created_at.isoformat(),
    }


def _round_row(
    version: ModelVersion, children: list[ModelVersion], speed: dict[str, Any], deployed: int | None
) -> RoundRow:
    quality, measured_in = _quality(version, children)
    training = version.metrics.get("training") or {}
    masks, images = int(speed.get("masks", 0)), int(speed.get("images", 0))
    return {
        "version_id": version.pk,
        "name": version.name,
        "round": version.round or 0,
        "label": _label(version),
        "status": version.status,
        "is_deployed": version.pk == deployed,
        "parent_id": version.parent_id,
        "masks": masks,
        "images": images,
        "masks_per_image": masks / images if images else None,
        "seconds_per_mask": _float(speed.get("seconds_per_mask")),
        "clicks_per_mask": _float(speed.get("clicks_per_mask")),
        "miou_1": _float(quality.get("miou@1")),
        "miou_3": _float(quality.get("miou@3")),
        "clicks_to_target": _float(quality.get("clicks_to_0.9")),
        "metrics_from_round": measured_in if quality else None,
        "training_seconds": _float(training.get("seconds")),
    }


def _lineage(
    versions: list[ModelVersion],
    children: dict[int, list[ModelVersion]],
    deployments: dict[int, list[DeploymentRow]],
    deployed: int | None,
) -> list[LineageNode]:
    """Depth-first from each root (no parent in the project), children in id order."""
    ids = {version.pk for version in versions}
    roots = [v for v in versions if v.parent_id is None or v.parent_id not in ids]
    nodes: list[LineageNode] = []
    stack = [(root, 0) for root in sorted(roots, key=lambda v: v.pk, reverse=True)]
    while stack:
        version, depth = stack.pop()
        nodes.append(
            {
                "version_id": version.pk,
                "name": version.name,
                "label": _label(version),
                "depth": depth,
                "parent_id": version.parent_id,
                "status": version.status,
                "is_deployed": version.pk == deployed,
                "deployments": deployments.get(version.pk, []),
            }
        )
        for child in reversed(children.get(version.pk, [])):
            stack.append((child, depth + 1))
    return nodes


def project_dashboard(*, project: Project) -> Dashboard:
    """Every figure of the dashboard page and its JSON endpoint (a few queries, none per row)."""
    versions = list(ModelVersion.objects.filter(project=project).order_by("id"))
    children: dict[int, list[ModelVersion]] = {}
    for version in versions:
        if version.parent_id is not None:
            children.setdefault(version.parent_id, []).append(version)
    deployed = project.deployed_version_id
    speed = _speed(project)
    history = [
        _deployment_row(deployment)
        for deployment in Deployment.objects.filter(project=project)
        .select_related("user")
        .order_by("-id")
    ]
    per_version: dict[int, list[DeploymentRow]] = {}
    for row in reversed(history):  # oldest first under each version
        per_version.setdefault(row["version_id"], []).append(row)
    rounds = [
        _round_row(version, children.get(version.pk, []), speed.get(version.pk, {}), deployed)
        for version in sorted(versions, key=lambda v: (v.round or 0, v.pk))
    ]
    return {
        "deployed_version_id": deployed,
        "rounds": rounds,
        "lineage": _lineage(versions, children, per_version, deployed),
        "deployments": history,
    }
