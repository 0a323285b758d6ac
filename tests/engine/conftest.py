"""Fixtures for the engine's Django side: a project, the golden tiny checkpoint as a version."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PilImage

from annotation.models import Image, Project
from annotation.services.ingest import images_ingest_batch
from engine.inference import clear_model_cache
from engine.models import ModelVersion
from engine.sam.checkpoint import file_sha256, read_checkpoint
from engine.services.registry import checkpoint_key
from storage.blobs import get_blob_store

GOLDEN_CHECKPOINT = Path(__file__).parent / "sam" / "goldens" / "tiny_sam.pth"


@pytest.fixture
def fresh_model_cache():
    """This process's model cache, empty before and after (not autouse: sam/ is Django-free)."""
    clear_model_cache()
    yield
    clear_model_cache()


@pytest.fixture
def project(db: None, fresh_model_cache: None) -> Project:
    return Project.objects.create(name="engine-test")


@pytest.fixture
def golden_path(tmp_path: Path) -> Path:
    """A private copy of the golden tiny checkpoint (official key layout)."""
    path = tmp_path / "sam_vit_tiny.pth"
    shutil.copyfile(GOLDEN_CHECKPOINT, path)
    return path


def register_golden(project: Project) -> ModelVersion:
    """The golden checkpoint stored as a blob and registered, without the ONNX export."""
    sha256 = file_sha256(GOLDEN_CHECKPOINT)
    with GOLDEN_CHECKPOINT.open("rb") as handle:
        get_blob_store().put_file(checkpoint_key(sha256), handle)
    loaded = read_checkpoint(GOLDEN_CHECKPOINT)
    return ModelVersion.objects.create(
        project=project,
        arch=loaded.arch,
        config=loaded.config.to_dict(),
        checkpoint_key=checkpoint_key(sha256),
        sha256=sha256,
    )


@pytest.fixture
def tiny_version(project: Project) -> ModelVersion:
    return register_golden(project)


def png_bytes(seed: int, size: tuple[int, int] = (48, 64)) -> bytes:
    """A PNG of smooth random shapes (height, width), so masks are not pure noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:] = rng.integers(0, 255, 3)
    for _ in range(3):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        y1, x1 = y0 + rng.integers(4, height // 2), x0 + rng.integers(4, width // 2)
        pixels[y0:y1, x0:x1] = rng.integers(0, 255, 3)
    out = io.BytesIO()
    PilImage.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def add_images(project: Project, count: int, *, first_seed: int = 1) -> list[Image]:
    files = [(f"img{seed}.png", png_bytes(seed)) for seed in range(first_seed, first_seed + count)]
    outcomes = images_ingest_batch(project=project, files=files)
    images = [outcome.image for outcome in outcomes]
    assert all(image is not None for image in images)
    return [image for image in images if image is not None]
