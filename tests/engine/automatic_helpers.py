"""Shared pieces of the automatic-run tests: a deployed tiny model, small fast settings, and an
in-process stand-in for the gpu queue that runs queued chunks in any order."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from annotation.models import Image, Mask, Project
from engine.models import AutomaticImage, Job, ModelVersion
from engine.sam.checkpoint import file_sha256, read_checkpoint
from engine.services.automatic import automatic_chunk_run, lifecycle
from engine.services.registry import checkpoint_key, model_version_deploy
from storage.blobs import get_blob_store
from tests.engine.conftest import GOLDEN_CHECKPOINT, add_images, register_golden

# A 4 x 4 grid, no crops, every candidate kept: a few masks per image in about a second.
FAST = {
    "points_per_side": 4,
    "crop_n_layers": 0,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "min_mask_region_area": 0,
    "max_mask_area_fraction": None,
}


def deployed_project(name: str, images: int) -> tuple[Project, ModelVersion, list[Image]]:
    project = Project.objects.create(name=name)
    version = register_golden(project)
    model_version_deploy(project=project, version=version)
    return project, version, add_images(project, images)


def register_variant(project: Project, folder: Path) -> ModelVersion:
    """A second version of the project: the golden weights with one decoder bias shifted."""
    state = torch.load(GOLDEN_CHECKPOINT, map_location="cpu", weights_only=True)
    key = next(k for k in state if k.startswith("mask_decoder.") and k.endswith(".bias"))
    state[key] = state[key] + 0.01
    path = folder / "variant.pth"
    torch.save(state, path)
    sha256 = file_sha256(path)
    with path.open("rb") as handle:
        get_blob_store().put_file(checkpoint_key(sha256), handle)
    loaded = read_checkpoint(path)
    return ModelVersion.objects.create(
        project=project,
        arch=loaded.arch,
        config=loaded.config.to_dict(),
        checkpoint_key=checkpoint_key(sha256),
        sha256=sha256,
        name="variant",
    )


def corrupt(image: Image) -> None:
    """Overwrite the image's stored bytes with something that is not an image."""
    get_blob_store().put_bytes(image.blob_key, b"not an image at all", content_type="image/png")


class Queue:
    """Collects the chunks a run queues (instead of Redis) and runs them here."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capture: Callable[..., Any]) -> None:
        self.sent: list[tuple[int, list[int]]] = []
        self.capture = capture
        monkeypatch.setattr(
            lifecycle, "_send_chunk", lambda job_id, ids: self.sent.append((job_id, list(ids)))
        )

    def call(self, function: Callable[..., Any], **kwargs: Any) -> Any:
        """Call a service with on-commit callbacks run (the test's transaction never commits)."""
        with self.capture(execute=True):
            return function(**kwargs)

    def run_one(self, index: int = 0) -> Any:
        job_id, ids = self.sent.pop(index)
        return self.call(automatic_chunk_run, job_id=job_id, image_ids=ids)

    def drain(self, *, last_first: bool = False, limit: int = 100) -> None:
        for _ in range(limit):
            if not self.sent:
                return
            self.run_one(-1 if last_first else 0)
        raise AssertionError(f"still {len(self.sent)} chunks queued after {limit} runs")


def masks_per_image(job: Job) -> dict[int, int]:
    counts: dict[int, int] = {}
    for image_id in Mask.objects.filter(job=job).values_list("image_id", flat=True):
        counts[image_id] = counts.get(image_id, 0) + 1
    return counts


def rows(job: Job) -> dict[int, str]:
    return dict(AutomaticImage.objects.filter(job=job).values_list("image_id", "status"))
