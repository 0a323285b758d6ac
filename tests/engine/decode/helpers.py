"""Helpers shared by the decode tests (their fixtures are in this folder's conftest.py):
registering a version, adding and embedding an image, the reference predictor, decoding."""

from pathlib import Path

import numpy as np
from django.contrib.auth.models import User
from pycocotools import mask as coco_mask

from annotation.models import Image, Project
from annotation.services.ingest import images_ingest_batch
from engine import inference
from engine.models import ModelVersion
from engine.sam.checkpoint import file_sha256, read_checkpoint
from engine.sam.predictor import SamPredictor
from engine.services.decode import masks_decode
from engine.services.embeddings import embedding_compute, embedding_key, embedding_load
from engine.services.mask_refs import mask_refs_flush
from engine.services.registry import checkpoint_key, onnx_decoder_key
from storage.blobs import get_blob_store
from tests.engine.conftest import png_bytes

IMAGE_SIZE = (120, 200)  # (H, W): not square, so the resize and the coordinates matter


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
    a client could send one back; tests/engine/decode/test_mask_refs_write_behind.py covers the
    moment before)."""
    arguments = {"model_version_id": None, "points": None, "labels": None, "box": None}
    result = masks_decode(user=user, image=image, **{**arguments, **kwargs})
    mask_refs_flush()
    return result
