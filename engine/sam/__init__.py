"""Framework-free Segment Anything: modeling, builders, checkpoint io, transforms, predictor.

No Django, Celery or settings imports here (an import-linter contract enforces it).

    from engine.sam import SamPredictor, build_sam, sam_model_registry

The names below are imported on first use, so `import engine.sam.config` (architecture names
and sizes) does not pull in torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.sam.build import build_sam, sam_model_registry
    from engine.sam.checkpoint import CheckpointError, load_sam, save_sam
    from engine.sam.device import select_device
    from engine.sam.embedding import ImageEmbedding, embed_images
    from engine.sam.predictor import SamPredictor

_EXPORTS = {
    "build_sam": "engine.sam.build",
    "sam_model_registry": "engine.sam.build",
    "CheckpointError": "engine.sam.checkpoint",
    "load_sam": "engine.sam.checkpoint",
    "save_sam": "engine.sam.checkpoint",
    "select_device": "engine.sam.device",
    "ImageEmbedding": "engine.sam.embedding",
    "embed_images": "engine.sam.embedding",
    "SamPredictor": "engine.sam.predictor",
    "SamAutomaticMaskGenerator": "engine.sam.amg",
}
__all__ = [
    "CheckpointError",
    "ImageEmbedding",
    "SamPredictor",
    "build_sam",
    "embed_images",
    "load_sam",
    "sam_model_registry",
    "save_sam",
    "select_device",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine.sam' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
