"""The automatic stage end to end: images/s of a real run on 1 and on 2 ``gpu`` worker
processes, the per-image time split, against the bare generator on the same images.

    python bench/automatic_stage.py [--images 4] [--size 256x320] [--points 8]
                                    [--crop-layers 0] [--iou 0.4] [--stability 0.6]
                                    [--timeout 900]

A real platform: its own PostgreSQL database (``DATABASE_URL``, default
postgres://postgres@127.0.0.1:5432/maskloop_bench_automatic; created and migrated when
missing), a Redis broker (``CELERY_BROKER_URL``, default redis://127.0.0.1:6379/13, flushed),
a temporary blob folder, the seed model (training/seed/seed_vit_tiny_domain_a.pth) deployed in
a fresh project of seeded synthetic scenes (training/loop/scenes.py, domain A).

Measured in one run, on the same images and settings (SA-1B filters: regions/holes < 100 px
cleaned, masks >= 95 % of the image dropped; the grid, crop layers and score thresholds from
the flags, because the seed model's predicted IoU stays under SA-1B's 0.88):
* reference: the bare ``SamAutomaticMaskGenerator`` in this process (warmed up on the first
  image), images already decoded;
* the platform with 1 worker, then with 2 worker processes (``celery worker -Q gpu --pool
  solo``), each warmed up first (model loaded) and the stored embeddings deleted before each
  timed run, so every run computes the encoder as the reference does. Time: from
  ``automatic_start`` to the job's end, as an operator sees it (queueing, reading images,
  writing masks and rows included).
CPU threads: the reference uses every core; with W workers each gets cores / W threads
(OMP_NUM_THREADS), the deployment the docs recommend for CPU workers (one per GPU on GPUs).
Prints images/s, platform/bare, 2-vs-1 scaling and the mean per-image split of the 1-worker
run from the AutomaticImage timings (load, encoder, decoder, post-processing, DB write).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.export import ensure_database  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/maskloop_bench_automatic"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/13"
SEED_MODEL = REPO / "training" / "seed" / "seed_vit_tiny_domain_a.pth"
PROJECT = "bench-automatic-stage"
WARM = 2  # warm-up images (one per worker)
CHUNK_TASK = "engine.tasks.gpu_automatic_chunk"
STAGES = ("load", "encoder", "decoder", "postprocess", "db")


def _parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width)


def _setup(database_url: str, broker_url: str, blob_root: Path, var_dir: Path) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "STORAGE_BACKEND": "local",
            "BLOB_ROOT": str(blob_root),
            "MASKLOOP_VAR_DIR": str(var_dir),
            "MASKLOOP_DEVICE": "cpu",
        }
    )
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _project(count: int, size: tuple[int, int]) -> tuple[Any, Any, list[Any]]:
    """A fresh project with the seed model deployed and ``count`` synthetic scenes."""
    import io

    from PIL import Image as PilImage

    from annotation.models import Project
    from annotation.services.ingest import images_ingest_batch
    from engine.models import ModelVersion
    from engine.sam.checkpoint import file_sha256, read_checkpoint
    from engine.services.registry import checkpoint_key, model_version_deploy
    from storage.blobs import get_blob_store
    from training.loop.scenes import generate_scene

    Project.objects.filter(name=PROJECT).delete()
    project = Project.objects.create(name=PROJECT)
    sha256 = file_sha256(SEED_MODEL)
    with SEED_MODEL.open("rb") as handle:
        get_blob_store().put_file(checkpoint_key(sha256), handle)
    loaded = read_checkpoint(SEED_MODEL)
    version = ModelVersion.objects.create(
        project=project,
        name="seed",
        arch=loaded.arch,
        config=loaded.config.to_dict(),
        checkpoint_key=checkpoint_key(sha256),
        sha256=sha256,
    )
    model_version_deploy(project=project, version=version)
    files = []
    for seed in range(1, count + WARM + 1):  # the first WARM for the warm-up runs
        out = io.BytesIO()
        PilImage.fromarray(generate_scene(seed, "A", size).image).save(out, "PNG")
        files.append((f"scene{seed}.png", out.getvalue()))
    images = [outcome.image for outcome in images_ingest_batch(project=project, files=files)]
    return project, version, images


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "points_per_side": args.points,
        "crop_n_layers": args.crop_layers,
        "crop_n_points_downscale_factor": 2,
        "pred_iou_thresh": args.iou,
        "stability_score_thresh": args.stability,
        "min_mask_region_area": 100,
        "max_mask_area_fraction": 0.95,
    }


def _bare(images: list[Any], settings: dict[str, Any]) -> tuple[float, int]:
    """Seconds and masks of the bare generator over the images (model loaded, pixels decoded)."""
    import torch

    from annotation.imaging import load_rgb_array
    from engine.sam.amg import SamAutomaticMaskGenerator
    from engine.sam.checkpoint import load_sam
    from storage.blobs import get_blob_store

    torch.set_num_threads(os.cpu_count() or 1)
    generator = SamAutomaticMaskGenerator(load_sam(SEED_MODEL), output_mode="coco_rle", **settings)
    pixels = [load_rgb_array(get_blob_store().get_bytes(image.blob_key)) for image in images]
    generator.generate(pixels[0])  # warm-up, as the workers are warmed up
    masks = 0
    start = time.perf_counter()
    for array in pixels:
        masks += len([r for r in generator.generate(array) if r["area"] > 0])
    return time.perf_counter() - start, masks


def _worker(log: Path, threads: int) -> "subprocess.Popen[bytes]":
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "LOG_LEVEL": "INFO",
    }
    command = [
        str(REPO / ".venv" / "bin" / "celery"),
        "-A", "config", "worker", "-Q", "gpu", "--pool", "solo", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "-n", f"bench-{uuid.uuid4().hex[:8]}@%h",
    ]  # fmt: skip
    with log.open("wb") as sink:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.2)


def _run(project: Any, image_ids: list[int], settings: dict[str, Any], **kw: Any) -> Any:
    from engine.models import Job
    from engine.services.automatic import automatic_start

    timeout = float(kw.pop("timeout", 900))
    job = automatic_start(project=project, user=None, params=settings, image_ids=image_ids, **kw)

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    _wait(finished, timeout, f"run {job.pk}")
    if job.status != Job.Status.SUCCEEDED:
        raise SystemExit(f"run {job.pk} {job.status}: {job.error}")
    return job


def _platform(
    project: Any, images: list[Any], settings: dict[str, Any], workers: int, folder: Path,
    timeout: float,
) -> tuple[float, Any]:  # fmt: skip
    """Seconds of a timed run on ``workers`` fresh worker processes (after a warm-up)."""
    from storage.blobs import get_blob_store

    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [_worker(folder / f"worker-{workers}-{i}.log", threads) for i in range(workers)]
    try:
        logs = [folder / f"worker-{workers}-{i}.log" for i in range(workers)]
        _wait(lambda: all(" ready." in log.read_text() for log in logs), 120, "workers ready")
        # Warm-up runs until every worker has run a chunk (and so loaded the model).
        warm = [image.pk for image in images[:WARM]]
        for _ in range(10):
            _run(project, warm[:workers], settings, chunk=1, in_flight=workers, timeout=timeout)
            if all(f"{CHUNK_TASK}[" in log.read_text() for log in logs):
                break
        store = get_blob_store()  # every timed run computes its embeddings, like the reference
        for key in list(store.list("embeddings/")):
            store.delete(key)
        ids = [image.pk for image in images[WARM:]]
        start = time.perf_counter()
        job = _run(project, ids, settings, chunk=1, in_flight=2 * workers, timeout=timeout)
        return time.perf_counter() - start, job
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", default="256x320", help="scene height x width")
    parser.add_argument("--points", type=int, default=8, help="points_per_side")
    parser.add_argument("--crop-layers", type=int, default=0)
    parser.add_argument("--iou", type=float, default=0.4, help="pred_iou_thresh")
    parser.add_argument("--stability", type=float, default=0.6, help="stability_score_thresh")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run at most")
    args = parser.parse_args(argv)
    database_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    broker_url = os.environ.get("CELERY_BROKER_URL") or DEFAULT_BROKER_URL
    ensure_database(database_url)
    folder = Path(tempfile.mkdtemp(prefix="bench-automatic-"))
    try:
        _setup(database_url, broker_url, folder / "blobs", folder / "var")
        import redis

        redis.Redis.from_url(broker_url).flushdb()
        settings = _settings(args)
        project, _, images = _project(args.images, _parse_size(args.size))
        bare_s, bare_masks = _bare(images[WARM:], settings)
        one_s, one_job = _platform(project, images, settings, 1, folder, args.timeout)
        two_s, two_job = _platform(project, images, settings, 2, folder, args.timeout)
        _report(args, settings, bare_s, bare_masks, one_s, one_job, two_s, two_job)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _split(job: Any) -> dict[str, float]:
    from engine.models import AutomaticImage

    rows = list(AutomaticImage.objects.filter(job=job, status="done"))
    return {
        stage: sum(float(row.timings.get(stage, 0.0)) for row in rows) / max(1, len(rows))
        for stage in STAGES
    }


def _report(
    args: argparse.Namespace, settings: dict[str, Any], bare_s: float, bare_masks: int,
    one_s: float, one_job: Any, two_s: float, two_job: Any,
) -> None:  # fmt: skip
    count = args.images
    bare, one, two = count / bare_s, count / one_s, count / two_s
    print(f"automatic stage, {count} synthetic scenes {args.size}, seed vit_tiny, CPU")
    print(f"settings: {settings}")
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")
    print(f"bare generator (reference)  {bare:7.3f} images/s  ({bare_masks} masks)")
    print(f"platform, 1 worker          {one:7.3f} images/s  ({one_job.result['masks']} masks)")
    print(f"platform, 2 workers         {two:7.3f} images/s  ({two_job.result['masks']} masks)")
    print(f"ratio platform (1 worker) / bare: {one / bare:.3f}")
    print(f"scaling 2 workers / 1 worker:     {two / one:.3f}")
    split = _split(one_job)
    total = sum(split.values()) or 1.0
    print("per-image split, 1-worker run (mean seconds, share):")
    for stage, seconds in split.items():
        print(f"  {stage:<12} {seconds:8.3f} s  {100 * seconds / total:5.1f} %")


if __name__ == "__main__":
    raise SystemExit(main())
