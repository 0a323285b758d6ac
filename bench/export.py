"""COCO export throughput and peak memory against a bare pycocotools baseline, same run.

    python bench/export.py [--sizes 10000,100000] [--fresh]

Sets up its own PostgreSQL database (``DATABASE_URL``, default
postgres://postgres@127.0.0.1:5432/maskloop_bench; created and migrated when missing) and a
temporary blob folder. For each size it stores that many random masks (rotated ellipses on 64
images of 640x480, from a pool of 256 distinct masks) in a project of their own, then runs, each
in a fresh subprocess so that peak RSS is per run:

* ours: ``export_start`` + ``export_run`` of that project as COCO (read rows, stream JSON);
* baseline: pycocotools ``mask.encode`` of the same masks (already in memory as arrays), area and
  bbox, a COCO dict built in memory and ``json.dump``-ed, which is what a script without the
  data engine does.

Prints masks/s and peak RSS for both, the ratio ours/baseline, and RSS(largest)/RSS(smallest)
for our export (goal: <= 1.2 between 10k and 100k masks).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/maskloop_bench"
IMAGES = 64
WIDTH, HEIGHT = 640, 480
POOL = 256
SEED = 20240401


def mask_pool() -> list[np.ndarray]:
    """POOL distinct rotated ellipses, H x W bool, the same for every process (fixed seed)."""
    rng = np.random.default_rng(SEED)
    ys, xs = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
    pool = []
    for _ in range(POOL):
        cy, cx = rng.uniform(0.15, 0.85) * HEIGHT, rng.uniform(0.15, 0.85) * WIDTH
        ry, rx = rng.uniform(8, HEIGHT / 3), rng.uniform(8, WIDTH / 3)
        angle = rng.uniform(0, np.pi)
        cos, sin = np.cos(angle), np.sin(angle)
        u = (xs - cx) * cos + (ys - cy) * sin
        v = -(xs - cx) * sin + (ys - cy) * cos
        pool.append((u / rx) ** 2 + (v / ry) ** 2 <= 1.0)
    return pool


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- Django setup ----------------------------------------------------------------------------


def setup_django(database_url: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def ensure_database(database_url: str) -> None:
    """Create the benchmark database when it does not exist (connecting to ``postgres``)."""
    import psycopg
    from psycopg import sql

    base, name = database_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def project_name(size: int) -> str:
    return f"bench-export-{size}"


def populate(size: int, fresh: bool) -> None:
    """A project with ``size`` accepted masks over IMAGES images (kept between runs)."""
    from django.db import transaction

    from annotation.models import Image, Mask, Project, Stage
    from annotation.services.masks import mask_encode

    name = project_name(size)
    project = Project.objects.filter(name=name).first()
    if project is not None and not fresh and project.masks.count() == size:
        print(f"{name}: {size} masks already stored")
        return
    if project is not None:
        project.delete()
    started = time.perf_counter()
    encoded = [mask_encode(height=HEIGHT, width=WIDTH, binary=pixels) for pixels in mask_pool()]
    with transaction.atomic():
        project = Project.objects.create(name=name, stage=Stage.FULLY_AUTOMATIC)
        images = Image.objects.bulk_create(
            Image(
                project=project,
                blob_key=f"images/{size:08d}{index:056d}",
                sha256=f"{size:08d}{index:056d}",
                width=WIDTH,
                height=HEIGHT,
                file_name=f"bench_{index}.jpg",
                format="JPEG",
                byte_size=1,
            )
            for index in range(IMAGES)
        )
        batch: list[Mask] = []
        for index in range(size):
            mask = encoded[index % POOL]
            batch.append(
                Mask(
                    project=project,
                    image=images[index % IMAGES],
                    rle_counts=mask.counts,
                    bbox=mask.bbox,
                    area=mask.area,
                    stage=Stage.FULLY_AUTOMATIC,
                    source=Mask.Source.AUTOMATIC,
                    predicted_iou=0.9,
                    stability_score=0.95,
                    point_coords=[[mask.bbox[0] + 1, mask.bbox[1] + 1]],
                    crop_box=[0, 0, WIDTH, HEIGHT],
                )
            )
            if len(batch) == 5000:
                Mask.objects.bulk_create(batch)
                batch = []
        Mask.objects.bulk_create(batch)
    print(f"{name}: stored {size} masks in {time.perf_counter() - started:.1f} s")


# --- the two measured runs (each in its own process) -----------------------------------------


def child_ours(size: int) -> dict[str, Any]:
    from annotation.models import Project
    from annotation.services.export import export_run, export_start

    project = Project.objects.get(name=project_name(size))
    job = export_start(project=project, fmt="coco", enqueue=False)
    started = time.perf_counter()
    result = export_run(job_id=job.pk)
    seconds = time.perf_counter() - started
    if result is None or result["annotations"] != size:
        raise SystemExit(f"export of {size} masks went wrong: {result}")
    return {"seconds": seconds, "bytes": result["files"][0]["bytes"]}


def child_baseline(size: int, workdir: Path) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    pool = [np.asfortranarray(pixels, dtype=np.uint8) for pixels in mask_pool()]
    started = time.perf_counter()
    annotations = []
    for index in range(size):
        rle = mask_utils.encode(pool[index % POOL])
        annotations.append(
            {
                "id": index + 1,
                "image_id": index % IMAGES + 1,
                "category_id": 1,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": int(mask_utils.area(rle)),
                "bbox": mask_utils.toBbox(rle).tolist(),
                "iscrowd": 0,
            }
        )
    document = {
        "images": [
            {"id": i + 1, "width": WIDTH, "height": HEIGHT, "file_name": f"bench_{i}.jpg"}
            for i in range(IMAGES)
        ],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
    }
    path = workdir / f"baseline-{size}.json"
    with path.open("w") as fh:
        json.dump(document, fh)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": path.stat().st_size}


def run_child(kind: str, size: int, database_url: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--sizes", str(size)]
    done = subprocess.run(
        command, env={**os.environ, "DATABASE_URL": database_url}, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} export of {size} masks failed:\n{done.stderr}")
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    measured["masks_per_s"] = size / measured["seconds"]
    return measured


def measure(
    sizes: list[int], database_url: str, *, fresh: bool
) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    ensure_database(database_url)
    setup_django(database_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    for size in sizes:
        populate(size, fresh)
    rows = []
    for size in sizes:
        ours = run_child("ours", size, database_url)
        baseline = run_child("baseline", size, database_url)
        rows.append((size, ours, baseline))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated mask counts")
    parser.add_argument("--fresh", action="store_true", help="regenerate the stored masks")
    parser.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)

    if args.child:
        setup_django(database_url)
        workdir = Path(os.environ["MASKLOOP_VAR_DIR"])
        if args.child == "ours":
            measured = child_ours(sizes[0])
        else:
            measured = child_baseline(sizes[0], workdir)
        print(json.dumps({**measured, "peak_rss_mib": peak_rss_mib()}))
        return

    scratch = Path(tempfile.mkdtemp(prefix="maskloop-bench-export-"))
    os.environ["MASKLOOP_VAR_DIR"] = str(scratch)
    os.environ["BLOB_ROOT"] = str(scratch / "blobs")
    os.environ["STORAGE_BACKEND"] = "local"
    try:
        rows = measure(sizes, database_url, fresh=args.fresh)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nCOCO export, {IMAGES} images of {WIDTH}x{HEIGHT}, masks stored in PostgreSQL")
    print(
        f"{'masks':>8} | {'ours masks/s':>12} {'peak RSS':>10} | "
        f"{'pycocotools masks/s':>19} {'peak RSS':>10} | {'ours/baseline':>13}"
    )
    for size, ours, baseline in rows:
        print(
            f"{size:>8} | {ours['masks_per_s']:>12.0f} {ours['peak_rss_mib']:>6.0f} MiB | "
            f"{baseline['masks_per_s']:>19.0f} {baseline['peak_rss_mib']:>6.0f} MiB | "
            f"{ours['masks_per_s'] / baseline['masks_per_s']:>12.2f}x"
        )
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        ratio = large[1]["peak_rss_mib"] / small[1]["peak_rss_mib"]
        verdict = "meets" if ratio <= 1.2 else "MISSES"
        print(
            f"ours: peak RSS at {large[0]} masks / at {small[0]} masks = {ratio:.2f} "
            f"({verdict} the goal <= 1.2); baseline: "
            f"{large[2]['peak_rss_mib'] / small[2]['peak_rss_mib']:.2f}"
        )


if __name__ == "__main__":
    main()
