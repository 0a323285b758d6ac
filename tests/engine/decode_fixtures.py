"""Decode fixtures and helpers shared by the decode service, API, fast-path and ONNX tests:
a project with a deployed golden tiny version that has an ONNX decoder, an embedded image."""

from pathlib import Path

import numpy as np
import pytest
import torch
from django.contrib.auth.models import User
from django.core.cache import caches
from pycocotools import mask as coco_mask

from annotation.models import Image, Project
from annotation.services.ingest import images_ingest_batch
from annotation.services.projects import membership_set, project_create
from engine import inference
from engine.models import ModelVersion
from engine.sam.checkpoint import file_sha256, load_sam, read_checkpoint, save_sam
from engine.sam.onnx_export import export_decoder_onnx
from engine.sam.predictor import SamPredictor
from engine.services import serving
from engine.services.decode import (
    masks_decode,
)
from engine.services.embeddings import embedding_compute, embedding_key, embedding_load
from engine.services.mask_refs import mask_refs_flush, mask_refs_forget_recent
from engine.services.registry import checkpoint_key, model_version_deploy, onnx_decoder_key
from storage.blobs import get_blob_store
from tests.engine.conftest import GOLDEN_CHECKPOINT, png_bytes

IMAGE_SIZE = (120, 200)  # (H, W): not square, so the resize and the coordinates matter


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


def register(
    project: Project, path: Path, *, onnx: bytes | None = None, name: str = ""
) -> ModelVersion:
    """A checkpoint stored as a blob and registered (with an ONNX decoder blob when given)."""
    sha256 = file_sha256(path)
    store = get_blob_store()
    with path.open("rb") as handle:
        store.put_file(checkpoint_key(sha256), handle)
    onnx_key = ""
    if onnx is not None:
        onnx_key = onnx_decoder_key(sha256)
        store.put_bytes(onnx_key, onnx)
    loaded = read_checkpoint(path)
    return ModelVersion.objects.create(
        project=project,
        name=name or path.name,
        arch=loaded.arch,
        config=loaded.config.to_dict(),
        checkpoint_key=checkpoint_key(sha256),
        sha256=sha256,
        onnx_decoder_key=onnx_key,
    )


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


def add_image(project: Project, seed: int = 1) -> Image:
    [outcome] = images_ingest_batch(
        project=project, files=[(f"img{seed}.png", png_bytes(seed, IMAGE_SIZE))]
    )
    assert outcome.image is not None
    return outcome.image


_computed: dict[tuple[str, str], bytes] = {}  # (checkpoint sha, image sha) -> stored blob


def store_embedding(image: Image, version: ModelVersion) -> None:
    """What the worker stores (embedding_compute), computed once per session per image."""
    key = embedding_key(model_version_id=version.pk, image_sha256=image.sha256)
    seen = (version.sha256, image.sha256)
    if seen in _computed:
        get_blob_store().put_bytes(key, _computed[seen])
        return
    embedding_compute(image_id=image.pk, model_version_id=version.pk)
    _computed[seen] = get_blob_store().get_bytes(key)


@pytest.fixture
def image(cats: Project, version: ModelVersion) -> Image:
    """An image of cats whose embedding for the deployed version is stored."""
    image = add_image(cats)
    store_embedding(image, version)
    return image


def reference_predictor(image: Image, version: ModelVersion) -> SamPredictor:
    """SamPredictor straight on the stored embedding: what every decode must equal."""
    stored = embedding_load(image=image, model_version=version)
    assert stored is not None
    predictor = SamPredictor(inference.model_for_version(version))
    predictor.set_embedding(stored)
    return predictor


def rle_pixels(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def decode(user: User, image: Image, **kwargs):
    """masks_decode, returning once its refs are in the shared cache (as they are by the time
    a client could send one back; tests/engine/test_mask_refs_write_behind.py covers the
    moment before)."""
    arguments = {"model_version_id": None, "points": None, "labels": None, "box": None}
    result = masks_decode(user=user, image=image, **{**arguments, **kwargs})
    mask_refs_flush()
    return result
