"""Data for the retrain-round tests: synthetic scenes ingested as images through the ingest
service, their exact instance masks stored as accepted Mask rows, and the golden vit_tiny
checkpoint as the deployed parent version."""

import io
from typing import Any

import numpy as np
from PIL import Image as PilImage

from annotation.models import Image, Mask, Project
from annotation.services.ingest import images_ingest_batch
from annotation.services.masks import masks_bulk_create
from engine.models import ModelVersion
from engine.services.registry import model_version_deploy
from tests.engine.conftest import register_golden
from training.loop.scenes import generate_scene

SCENE_SIZE = (96, 128)
# Tiny runs: two steps of two masks, 3 interaction iterations, a state saved every step.
FAST = {"steps": 2, "masks_per_image": 2, "checkpoint_every": 1, "iterations": 3}


def scene_png(seed: int, domain: str = "A") -> tuple[bytes, list[np.ndarray]]:
    scene = generate_scene(seed, domain, size=SCENE_SIZE)
    out = io.BytesIO()
    PilImage.fromarray(scene.image).save(out, "PNG")
    return out.getvalue(), scene.masks


def add_scenes(
    project: Project, seeds: range | list[int], *, max_masks: int | None = None
) -> list[Image]:
    """Ingest one scene per seed and store its masks as accepted (at most ``max_masks`` each)."""
    rendered = [scene_png(seed) for seed in seeds]
    outcomes = images_ingest_batch(
        project=project,
        files=[(f"scene{seed}.png", png) for seed, (png, _) in zip(seeds, rendered, strict=False)],
    )
    images = []
    for outcome, (_, masks) in zip(outcomes, rendered, strict=True):
        assert outcome.image is not None, outcome
        records: list[dict[str, Any]] = [{"binary": mask} for mask in masks[:max_masks]]
        masks_bulk_create(image=outcome.image, records=records, source=Mask.Source.MANUAL)
        images.append(outcome.image)
    return images


def deployed_parent(project: Project) -> ModelVersion:
    version = register_golden(project)
    model_version_deploy(project=project, version=version)
    project.refresh_from_db()
    return version


def accepted_count(project: Project) -> int:
    return Mask.objects.filter(project=project, status=Mask.Status.ACCEPTED).count()
