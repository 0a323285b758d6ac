"""Bulk mask insert of an automatic run into PostgreSQL: masks/s, ours against Django's
``bulk_create``, measured in the same run on the same records.

    python bench/mask_insert.py [--masks 20000] [--per-image 100] [--size 1500x2250]
                                [--budget 60]

Sets up its own PostgreSQL database (``DATABASE_URL``, default
postgres://postgres@127.0.0.1:5432/maskloop_bench_insert; created and migrated when missing).
The records are what ``SamAutomaticMaskGenerator(output_mode="coco_rle")`` returns: compressed
COCO RLE (counts as str) of irregular blobs (ellipses with notches and holes, a pool of 200
distinct masks at SA-1B's typical 1500 x 2250) with bbox, area, predicted_iou,
stability_score, point_coords and crop_box; ``--per-image`` of them per image, as one call per
image, each its own transaction, as the automatic stage writes them. Four writers:

* end to end, the service the automatic stage calls, against the general writer:
  - ours: ``masks_replace_for_run`` (runs-based RLE check, one COPY per image);
  - reference: ``masks_bulk_create`` (``mask_encode``'s pixel-wise check, ``bulk_create``);
* the database write alone, the same checked rows:
  - ours: the COPY writer;  - reference: ``Mask.objects.bulk_create``.

Each writer stops after ``--budget`` seconds or ``--masks`` masks, whichever comes first, so a
slow reference cannot run for long; rates are masks/s over what it wrote. Prints masks/s and
the ratio ours/reference for both pairs.
"""

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.export import ensure_database, setup_django  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/maskloop_bench_insert"
POOL = 200
SEED = 20240606


def blob_pool(height: int, width: int) -> list[dict[str, Any]]:
    """POOL generator-like records over an H x W image (fixed seed, same every run)."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(SEED)
    records = []
    for _ in range(POOL):
        # Sizes spread like SA-1B's: many small objects, some large.
        ry = float(np.exp(rng.uniform(np.log(8), np.log(height / 3))))
        rx = ry * rng.uniform(0.4, 2.5)
        # Centres anywhere: a blob may be cut by the image border, as objects are.
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        y0, y1 = max(int(cy - ry) - 1, 0), min(int(cy + ry) + 2, height)
        x0, x1 = max(int(cx - rx) - 1, 0), min(int(cx + rx) + 2, width)
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        angle = np.arctan2(ys - cy, xs - cx)
        # A wobbly outline (notches), and a hole in one blob out of three.
        radius = 1.0 + 0.15 * np.sin(rng.integers(3, 9) * angle + rng.uniform(0, 6.3))
        inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= radius**2
        if rng.uniform() < 1 / 3:
            inside &= ((ys - cy) / (ry / 3)) ** 2 + ((xs - cx) / (rx / 3)) ** 2 > 1.0
        pixels = np.zeros((height, width), dtype=np.uint8)
        pixels[y0:y1, x0:x1] = inside
        rle = mask_utils.encode(np.asfortranarray(pixels))
        records.append(
            {
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                "area": int(mask_utils.area(rle)),
                "bbox": [int(v) for v in mask_utils.toBbox(rle)],
                "predicted_iou": float(rng.uniform(0.88, 1.0)),
                "point_coords": [[float(cx), float(cy)]],
                "stability_score": float(rng.uniform(0.95, 1.0)),
                "crop_box": [0, 0, width, height],
            }
        )
    return records


def run_images(name: str, *, images: int, height: int, width: int) -> tuple[Any, Any, list[Any]]:
    """A fresh project with ``images`` images and an automatic Job (the previous one dropped)."""
    from annotation.models import Image, Project, Stage
    from engine.models import Job

    Project.objects.filter(name=name).delete()
    project = Project.objects.create(name=name, stage=Stage.FULLY_AUTOMATIC)
    rows = Image.objects.bulk_create(
        Image(
            project=project,
            blob_key=f"images/{index:064d}",
            sha256=f"{index:064d}",
            width=width,
            height=height,
            file_name=f"bench_{index}.jpg",
            format="JPEG",
            byte_size=1,
        )
        for index in range(images)
    )
    job = Job.objects.create(project=project, kind=Job.Kind.AUTOMATIC)
    return project, job, rows


def timed(
    write: Callable[[Any, int], int], *, images: list[Any], budget: float
) -> tuple[int, float]:
    """Masks written and seconds spent, image by image, until the budget or the images end.
    ``write(image, index)`` writes the index-th image's batch."""
    written, spent = 0, 0.0
    for index, image in enumerate(images):
        began = time.perf_counter()
        written += write(image, index)
        spent += time.perf_counter() - began
        if spent >= budget:
            break
    return written, spent


def measure(args: argparse.Namespace, height: int, width: int) -> list[tuple[str, int, float]]:
    from django.db import transaction

    from annotation.models import Mask
    from annotation.services import masks_bulk
    from annotation.services.masks import masks_bulk_create
    from annotation.services.masks_bulk import masks_replace_for_run

    started = time.perf_counter()
    pool = blob_pool(height, width)
    lengths = [len(record["segmentation"]["counts"]) for record in pool]
    print(
        f"record pool: {POOL} masks of {height}x{width} in {time.perf_counter() - started:.1f} s,"
        f" counts length median {int(np.median(lengths))}, max {max(lengths)}"
    )
    images = -(-args.masks // args.per_image)
    # Image i gets per_image consecutive pool records from (i * per_image) mod POOL.
    starts = sorted({(i * args.per_image) % POOL for i in range(images)})
    batches = {start: [pool[(start + k) % POOL] for k in range(args.per_image)] for start in starts}

    def batch(index: int) -> list[dict[str, Any]]:
        return batches[(index * args.per_image) % POOL]

    def ours(job: Any) -> Callable[[Any, int], int]:
        def write(image: Any, index: int) -> int:
            return masks_replace_for_run(
                job=job,
                image=image,
                records=batch(index),
                source="automatic",
                status="accepted",
                stage="fully_automatic",
                model_version=None,
            )

        return write

    def reference(job: Any) -> Callable[[Any, int], int]:
        def write(image: Any, index: int) -> int:
            stored = masks_bulk_create(
                image=image, records=batch(index), source="automatic", stage="fully_automatic"
            )
            return len(stored)

        return write

    # For the database-only pair the records are checked once, before any timer runs.
    checked = {
        start: [masks_bulk._record_row(r, height=height, width=width) for r in records]
        for start, records in batches.items()
    }

    def db_only(insert: Callable[..., None]) -> Callable[[Any], Callable[[Any, int], int]]:
        def make(job: Any) -> Callable[[Any, int], int]:
            def write(image: Any, index: int) -> int:
                rows = checked[(index * args.per_image) % POOL]
                common = {
                    "project_id": image.project_id,
                    "image_id": image.pk,
                    "job_id": job.pk,
                    "model_version_id": None,
                    "stage": "fully_automatic",
                    "source": "automatic",
                    "status": "accepted",
                }
                with transaction.atomic():
                    insert(rows, common=common)
                return len(rows)

            return write

        return make

    results = []
    for label, make in (
        ("end to end, ours: masks_replace_for_run", ours),
        ("end to end, reference: masks_bulk_create (mask_encode + bulk_create)", reference),
        ("database only, ours: COPY", db_only(masks_bulk._insert_copy)),
        ("database only, reference: bulk_create", db_only(masks_bulk._insert_orm)),
    ):
        project, job, rows = run_images(
            "bench-mask-insert", images=images, height=height, width=width
        )
        written, spent = timed(make(job), images=rows, budget=args.budget)
        stored = Mask.objects.filter(project=project).count()
        if stored != written:
            raise SystemExit(f"{label}: wrote {written} masks but {stored} are stored")
        results.append((label, written, spent))
        print(f"{label}: {written} masks in {spent:.2f} s = {written / spent:.0f} masks/s")
    project.delete()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masks", type=int, default=20000, help="masks per writer at most")
    parser.add_argument("--per-image", type=int, default=100, help="masks per image (SA-1B ~100)")
    parser.add_argument("--size", default="1500x2250", help="image HEIGHTxWIDTH")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per writer at most")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    ensure_database(database_url)
    setup_django(database_url)
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    results = measure(args, height, width)
    rate = {label: written / spent for label, written, spent in results}
    labels = [label for label, _, _ in results]
    server = connection.cursor().connection.info.server_version
    print(f"\nPostgreSQL {server}, {args.per_image} masks per image of {args.size}")
    print(f"end to end: ours/reference = {rate[labels[0]] / rate[labels[1]]:.1f}x")
    print(f"database only: COPY/bulk_create = {rate[labels[2]] / rate[labels[3]]:.1f}x")


if __name__ == "__main__":
    main()
