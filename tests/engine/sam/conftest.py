"""Fixtures for the SAM core: the golden tiny model and its official outputs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.sam.build import build_sam
from engine.sam.checkpoint import load_sam
from engine.sam.modeling import Sam
from engine.sam.predictor import SamPredictor

GOLDENS = Path(__file__).parent / "goldens"


@pytest.fixture(scope="session")
def goldens() -> dict[str, np.ndarray]:
    with np.load(GOLDENS / "tiny_goldens.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def golden_sam() -> Sam:
    """The official tiny model's weights, loaded strictly through our checkpoint reader."""
    return load_sam(GOLDENS / "tiny_sam.pth", arch="vit_tiny")


@pytest.fixture(scope="session")
def tiny_sam() -> Sam:
    torch.manual_seed(0)
    return build_sam("vit_tiny")


@pytest.fixture
def embedded_predictor(golden_sam: Sam) -> SamPredictor:
    """A predictor holding a random embedding of a 300 x 200 image (no encoder run)."""
    predictor = SamPredictor(golden_sam)
    generator = torch.Generator().manual_seed(5)
    embedding = torch.randn((1, 64, 64, 64), generator=generator)
    predictor.set_embedding(embedding, original_size=(300, 200))
    return predictor
