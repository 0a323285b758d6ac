"""A throwaway maskloop platform for the latency benchmarks (decode_latency, browser_latency).

Environment for a server process on a temporary SQLite database and blob folder, a synthetic
image, the benchmark checkpoints (the golden tiny model, or seeded random vit_b weights), and a
random stored embedding for models whose encoder is too slow to run in a benchmark setup.
"""

import io
import os
import secrets
import socket
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "engine" / "sam" / "goldens" / "tiny_sam.pth"
SEED = REPO / "training" / "seed" / "seed_vit_tiny_domain_a.pth"  # trained: real masks
# The benchmarks' models (see bench/decode_latency.py). "official" and "seed" are trained and
# answer with object masks on a domain-A scene; "tiny" and "vit_b" get a synthetic image.
MODELS = ("tiny", "vit_b", "official", "seed")
REAL_MASKS = frozenset({"official", "seed"})
# Encoders too slow for a benchmark's setup: a seeded random embedding is stored instead.
RANDOM_EMBEDDING = frozenset({"vit_b"})
SCENE_SEED = 7


def platform_env(root: Path, cache_url: str = "") -> dict[str, str]:
    """Environment of a platform living under `root` (the caller's DATABASE_/CELERY_ dropped)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        "MASKLOOP_VAR_DIR": str(root),
        "DATABASE_URL": f"sqlite:///{root / 'bench.sqlite3'}",
        "STORAGE_BACKEND": "local",
        "BLOB_ROOT": str(root / "blobs"),
        "CELERY_BROKER_URL": "filesystem://localhost//",
        "MASKLOOP_CACHE_URL": cache_url,
        "MASKLOOP_DEVICE": "cpu",
        "LOG_LEVEL": "WARNING",
    }


def synthetic_png(width: int, height: int, seed: int) -> bytes:
    """Seeded ellipses on a flat background, as PNG bytes."""
    from PIL import Image as PilImage

    rng = np.random.default_rng(seed)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = rng.integers(0, 255, 3)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(8):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.05, 0.3) * height, rng.uniform(0.05, 0.3) * width
        pixels[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = rng.integers(0, 255, 3)
    out = io.BytesIO()
    PilImage.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def scene_png(width: int, height: int, seed: int) -> bytes:
    """A synthetic domain-A scene (the seed model's training domain), as PNG bytes."""
    from PIL import Image as PilImage

    from training.loop.scenes import generate_scene

    out = io.BytesIO()
    PilImage.fromarray(generate_scene(seed, "A", (height, width)).image).save(out, "PNG")
    return out.getvalue()


def bench_png(name: str, width: int, height: int) -> bytes:
    """The benchmark image of model `name`."""
    return (scene_png if name in REAL_MASKS else synthetic_png)(width, height, seed=SCENE_SEED)


def bench_objects(name: str, width: int, height: int) -> list[np.ndarray] | None:
    """The objects of model `name`'s image (its scene's masks, bool H x W), None where the image
    is synthetic_png's."""
    if name not in REAL_MASKS:
        return None
    from training.loop.scenes import generate_scene

    return list(generate_scene(SCENE_SEED, "A", (height, width)).masks)


def bench_checkpoint(name: str, root: Path) -> Path:
    """ "tiny": the golden checkpoint; "seed": the trained seed model; "official": the official
    decoder trained (bench/trained_decoder.py, cached under var/); "vit_b": seeded random vit_b
    weights, written under root (the only one a caller may delete)."""
    if name == "tiny":
        return GOLDEN
    if name == "seed":
        return SEED
    if name == "official":
        from bench.trained_decoder import official_decoder_checkpoint

        return official_decoder_checkpoint()
    from engine.sam.build import build_sam
    from engine.sam.checkpoint import save_sam
    from engine.sam.config import CONFIGS

    torch.manual_seed(0)
    path = root / "vit_b_random.pth"
    save_sam(build_sam("vit_b"), path, arch="vit_b", config=CONFIGS["vit_b"])
    return path


def store_random_embedding(*, version_id: int, image_sha256: str, width: int, height: int) -> None:
    """A seeded 1 x 256 x 64 x 64 embedding stored as a worker would (decoder timing does not
    depend on its values)."""
    from engine.sam.embedding import ImageEmbedding
    from engine.sam.transforms import ResizeLongestSide
    from engine.services.embeddings import embedding_key, embedding_to_bytes
    from storage.blobs import get_blob_store

    generator = torch.Generator().manual_seed(1)
    values = torch.randn((1, 256, 64, 64), generator=generator) * 0.5
    input_size = ResizeLongestSide.get_preprocess_shape(height, width, 1024)
    stored = ImageEmbedding(values, (height, width), input_size)
    key = embedding_key(model_version_id=version_id, image_sha256=image_sha256)
    get_blob_store().put_bytes(key, embedding_to_bytes(stored))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
