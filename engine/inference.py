"""The per-process model cache: a ModelVersion id -> its `Sam`, loaded once from the blob store.

Workers (the ``gpu`` queue) load whole models; web processes ask for ``decoder_only=True`` and
hold only the prompt encoder and mask decoder (they decode against stored embeddings), so the
image encoder is never loaded in a web process. Nothing is loaded, and CUDA is never queried,
at import time: the device is resolved from ``MASKLOOP_DEVICE`` on the first load.

The checkpoint blob is streamed to a temporary file and read by the same checked loader as the
import (``weights_only=True``, strict keys) with the registered sha256 verified, so a blob that
changed behind the registry's back is refused instead of silently served.
"""

import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import torch
from django.conf import settings

from engine.models import ModelVersion
from engine.sam.checkpoint import load_sam
from engine.sam.device import select_device
from engine.sam.modeling import Sam
from storage.blobs import get_blob_store

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_lock = threading.Lock()
_models: "OrderedDict[tuple[int, str, bool], Sam]" = OrderedDict()
_loads = 0  # checkpoints read from the blob store by this process (observable in tests)


def inference_device() -> torch.device:
    """The device named by ``MASKLOOP_DEVICE`` (resolved now, not at import)."""
    return select_device(settings.MASKLOOP_DEVICE)


def model_for_version(version: ModelVersion, *, decoder_only: bool = False) -> Sam:
    """The eval-mode model of ``version`` on the inference device, loaded at most once per
    process (an LRU of ``MASKLOOP_MODEL_CACHE_SIZE`` models). ``decoder_only``: without the
    image encoder's weights (see `engine.sam.checkpoint.EncoderNotLoaded`)."""
    key = (int(version.pk), version.sha256, decoder_only)
    with _lock:
        cached = _models.get(key)
        if cached is not None:
            _models.move_to_end(key)
            return cached
        model = _load(version, decoder_only=decoder_only).to(inference_device())
        _models[key] = model
        while len(_models) > max(1, settings.MASKLOOP_MODEL_CACHE_SIZE):
            evicted, _ = _models.popitem(last=False)
            logger.info("model version %s evicted from the cache", evicted[0])
        return model


def _load(version: ModelVersion, *, decoder_only: bool) -> Sam:
    global _loads
    tmp_root = Path(settings.VAR_DIR) / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="model-") as folder:
        path = Path(folder) / f"{version.sha256}.pth"
        with get_blob_store().open(version.checkpoint_key) as src, path.open("wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
        model = load_sam(
            path, arch=version.arch, expected_sha256=version.sha256, decoder_only=decoder_only
        )
    _loads += 1
    logger.info(
        "loaded model version %s (%s) from %s", version.pk, version.arch, version.checkpoint_key
    )
    return model


def loads_count() -> int:
    """How many checkpoints this process has read from the blob store."""
    return _loads


def clear_model_cache() -> None:
    """Forget every loaded model (tests; a worker reloads on next use)."""
    with _lock:
        _models.clear()
