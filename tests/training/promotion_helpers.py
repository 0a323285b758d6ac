"""Rows for the promotion, GC and dashboard tests: model versions as rounds register them
(round, parent, metrics per the issue's contract), images, masks made with a version."""

import uuid
from typing import Any

from django.contrib.auth.models import User

from annotation.models import Image, Mask, Project
from engine.models import ModelVersion
from storage.blobs import get_blob_store


def make_version(
    project: Project,
    *,
    round: int | None = None,
    parent: ModelVersion | None = None,
    metrics: dict[str, Any] | None = None,
    name: str = "",
) -> ModelVersion:
    """A registered version row (no checkpoint blob: these tests never load the model)."""
    sha = uuid.uuid4().hex * 2
    return ModelVersion.objects.create(
        project=project,
        name=name or (f"round {round}" if round else "seed"),
        arch="vit_tiny",
        checkpoint_key=f"checkpoints/{sha}.pth",
        sha256=sha,
        parent=parent,
        round=round,
        metrics=metrics or {},
    )


def validation(miou1: float, miou3: float = 0.0, clicks: float = 10.0) -> dict[str, float | int]:
    return {
        "miou@1": miou1, "miou@2": miou1, "miou@3": miou3, "miou@5": miou3, "miou@9": miou3,
        "miou_box": miou3, "clicks_to_0.9": clicks, "masks": 20, "images": 4,
    }  # fmt: skip


def round_metrics(
    child: dict[str, float | int], parent: dict[str, float | int], seconds: float = 12.5
) -> dict[str, Any]:
    return {
        "validation": child,
        "parent_validation": parent,
        "training": {"steps": 10, "masks": 40, "images": 8, "seconds": seconds,
                     "masks_per_second": 3.2, "final_loss": 0.5, "loss_curve": [[1, 0.9]],
                     "scope": "decoder", "round": 1},
    }  # fmt: skip


def make_images(project: Project, count: int) -> list[Image]:
    """Image rows (no pixels: the embedding queue only needs their ids and hashes)."""
    return [
        Image.objects.create(
            project=project,
            blob_key=f"images/{uuid.uuid4().hex}",
            sha256=uuid.uuid4().hex * 2,
            width=64,
            height=48,
            format="PNG",
            byte_size=100,
        )
        for _ in range(count)
    ]


def make_mask(
    image: Image,
    *,
    version: ModelVersion | None,
    annotator: User | None,
    seconds: float | None = None,
    clicks: int | None = None,
    status: str = Mask.Status.ACCEPTED,
) -> Mask:
    return Mask.objects.create(
        project=image.project, image=image, rle_counts="PPYo1", bbox=[0, 0, 1, 1], area=1,
        stage=image.project.stage, source=Mask.Source.ASSISTED, status=status,
        model_version=version, annotator=annotator, seconds_spent=seconds, clicks=clicks,
    )  # fmt: skip


def put_embedding_blobs(version: ModelVersion, images: list[Image]) -> list[str]:
    """Stand-in embedding blobs at the keys the embedding store uses."""
    from engine.services.embeddings import embedding_key

    store = get_blob_store()
    keys = [embedding_key(model_version_id=version.pk, image_sha256=i.sha256) for i in images]
    for key in keys:
        store.put_bytes(key, b"embedding")
    return keys
