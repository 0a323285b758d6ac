"""Fixtures of the decode service, API, mask-ref and ONNX tests: a project with a deployed
golden tiny version that has an ONNX decoder, an embedded image, and (autouse) empty
per-process caches around every test. Plain helpers live in ``helpers.py``."""

from pathlib import Path

import pytest
import torch
from django.contrib.auth.models import User
from django.core.cache import caches

from annotation.models import Image, Project
from annotation.services.projects import membership_set, project_create
from engine.models import ModelVersion
from engine.sam.checkpoint import load_sam, read_checkpoint, save_sam
from engine.sam.onnx_export import export_decoder_onnx
from engine.services import serving
from engine.services.mask_refs import mask_refs_flush, mask_refs_forget_recent
from engine.services.registry import model_version_deploy
from tests.engine.conftest import GOLDEN_CHECKPOINT
from tests.engine.decode.helpers import add_image, register, store_embedding


@pytest.fixture(scope="session")
def golden_onnx(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The golden tiny model's decoder exported once per session."""
    path = tmp_path_factory.mktemp("decode-onnx") / "decoder.onnx"
    export_decoder_onnx(load_sam(GOLDEN_CHECKPOINT), path)
    return path.read_bytes()


@pytest.fixture(scope="session")
def second_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another valid tiny checkpoint (decoder weights nudged), i.e. a second model version."""
    loaded = read_checkpoint(GOLDEN_CHECKPOINT)
    sam = load_sam(GOLDEN_CHECKPOINT)
    with torch.no_grad():
        sam.mask_decoder.iou_token.weight.add_(0.25)
    path = tmp_path_factory.mktemp("decode-ckpt") / "tiny_v2.pth"
    save_sam(sam, path, arch=loaded.arch, config=loaded.config)
    return path


@pytest.fixture(autouse=True)
def fresh_caches(fresh_model_cache: None):
    """Every test starts with no model, no embedding and no mask ref in this process."""
    serving.embedding_cache_clear()
    mask_refs_flush()  # no write behind an earlier answer lands after the clear
    caches["default"].clear()
    mask_refs_forget_recent()
    yield
    serving.embedding_cache_clear()
    mask_refs_flush()
    caches["default"].clear()
    mask_refs_forget_recent()


@pytest.fixture
def carol(db: None) -> User:
    return User.objects.create_user("carol", password="carol-pass-123")


@pytest.fixture
def cats(admin_user: User, annotator_user: User, carol: User) -> Project:
    """alice admin, bob and carol annotators (eve, the outsider, is no member)."""
    project = project_create(name="cats", creator=admin_user)
    membership_set(project=project, user=annotator_user, role="annotator")
    membership_set(project=project, user=carol, role="annotator")
    return project


@pytest.fixture
def version(cats: Project, golden_onnx: bytes) -> ModelVersion:
    """The golden tiny model, with its ONNX decoder, deployed in cats."""
    version = register(cats, GOLDEN_CHECKPOINT, onnx=golden_onnx, name="golden tiny")
    return model_version_deploy(project=cats, version=version)


@pytest.fixture
def image(cats: Project, version: ModelVersion) -> Image:
    """An image of cats whose embedding for the deployed version is stored."""
    image = add_image(cats)
    store_embedding(image, version)
    return image
