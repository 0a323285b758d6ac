"""Image import throughput from a folder and from an S3 prefix, against a bare reference.

    python bench/ingest.py [--n 1000] [--width 640] [--height 480]

Generates N distinct JPEGs (seeded gradients with noise) in a temp folder and imports them
into a fresh project with ``images_import`` from the folder; then uploads them to a moto S3
server started here (``tests/s3server.py``) and imports ``s3://bucket/prefix`` into another
fresh project. Each import writes to its own empty blob directory, so both pay for every blob
write.

The reference, measured in the same run on the same files, is the bare per-image cost without
the database or the blob store: read the bytes (from disk, or GET from the same S3 server),
sha256 them and fully decode them with Pillow. The printed ratio is import rate / reference
rate (1.0 would mean the platform adds nothing).

Database: ``DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/maskloop_bench``),
created if missing and migrated. The benchmark projects are deleted at the end.
"""

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.s3server import moto_server, s3_test_client

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/maskloop_bench"


def generate_jpegs(folder: Path, count: int, width: int, height: int) -> int:
    """Write ``count`` distinct seeded JPEGs; returns their total size in bytes."""
    total = 0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        rng = np.random.default_rng(i)
        a, b, c = rng.uniform(0.2, 1.0, size=3)
        base = np.stack([xs / width * 255 * a, ys / height * 255 * b, (xs + ys) % 256 * c], -1)
        noisy = base + rng.normal(0, 12, size=base.shape)
        pixels = np.clip(noisy, 0, 255).astype(np.uint8)
        path = folder / f"{i // 100:03d}" / f"img{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=90)
        total += path.stat().st_size
    return total


def ensure_database(url: str) -> None:
    """Create the database named in a PostgreSQL ``url`` if it does not exist."""
    import dj_database_url
    import psycopg
    from psycopg import sql

    config = dj_database_url.parse(url)
    if "postgresql" not in config["ENGINE"]:
        return
    name = config["NAME"]
    conninfo = psycopg.conninfo.make_conninfo(
        dbname="postgres",
        user=config.get("USER") or None,
        password=config.get("PASSWORD") or None,
        host=config.get("HOST") or None,
        port=str(config.get("PORT") or "") or None,
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def setup_django(database_url: str, blob_root: Path, var_dir: Path, s3_endpoint: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DATABASE_URL"] = database_url
    os.environ["BLOB_ROOT"] = str(blob_root)
    os.environ["MASKLOOP_VAR_DIR"] = str(var_dir)
    os.environ["STORAGE_BACKEND"] = "local"
    os.environ["S3_ENDPOINT_URL"] = s3_endpoint
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def upload(client: Any, bucket: str, folder: Path, prefix: str) -> list[str]:
    client.create_bucket(Bucket=bucket)
    paths = sorted(p for p in folder.rglob("*.jpg"))
    keys = [f"{prefix}/{p.relative_to(folder).as_posix()}" for p in paths]

    def put(pair: tuple[Path, str]) -> None:
        client.put_object(Bucket=bucket, Key=pair[1], Body=pair[0].read_bytes())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, zip(paths, keys, strict=True)))
    return keys


def reference(readers: list[Callable[[], bytes]]) -> float:
    """Seconds to read, sha256 and fully decode every image, with no database or store."""
    started = time.perf_counter()
    for read in readers:
        data = read()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    return time.perf_counter() - started


def timed_import(source: str, blob_root: Path, label: str, threads: int) -> tuple[float, Any]:
    from django.conf import settings

    from annotation.services.ingest import images_import
    from annotation.services.projects import project_create
    from storage.blobs import reset_blob_store

    settings.BLOB_ROOT = blob_root
    reset_blob_store()
    project = project_create(name=f"bench-ingest-{label}-{uuid.uuid4().hex[:8]}")
    started = time.perf_counter()
    summary = images_import(project=project, source=source, threads=threads)
    elapsed = time.perf_counter() - started
    if summary.rejected or summary.duplicate:
        raise SystemExit(f"{label}: unexpected outcome {summary.line}: {summary.rejected[:3]}")
    return elapsed, project


def row(label: str, count: int, seconds: float, reference_seconds: float | None = None) -> str:
    rate = count / seconds
    text = f"{label:<34} {rate:9.1f} images/s  ({seconds:6.2f} s)"
    if reference_seconds is not None:
        text += f"   ratio to reference {rate / (count / reference_seconds):5.2f}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, default=4, help="images_import worker threads")
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    ensure_database(database_url)
    work = Path(tempfile.mkdtemp(prefix="maskloop-bench-ingest-"))
    try:
        folder = work / "images"
        started = time.perf_counter()
        size = generate_jpegs(folder, args.n, args.width, args.height)
        print(
            f"generated {args.n} JPEGs {args.width}x{args.height}, {size / 1e6:.1f} MB "
            f"in {time.perf_counter() - started:.1f} s"
        )
        with moto_server() as endpoint:
            setup_django(database_url, work / "blobs-unused", work / "var", endpoint)
            run_all(args.n, folder, work, endpoint, args.threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(count: int, folder: Path, work: Path, endpoint: str, threads: int) -> None:
    from django.db import connection

    client = s3_test_client(endpoint, max_pool_connections=16, retries={"max_attempts": 5})
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    keys = upload(client, bucket, folder, "incoming")
    paths = sorted(folder.rglob("*.jpg"))
    print(
        f"database {connection.settings_dict['NAME']}, S3 endpoint {endpoint}, "
        f"{os.cpu_count()} CPUs, images_import threads={threads} (references: one thread)\n"
    )

    def from_disk(path: Path) -> Callable[[], bytes]:
        return path.read_bytes

    def from_s3(key: str) -> Callable[[], bytes]:
        return lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read()

    ref_disk = reference([from_disk(p) for p in paths])
    folder_seconds, folder_project = timed_import(
        str(folder), work / "blobs-folder", "folder", threads
    )
    ref_s3 = reference([from_s3(k) for k in keys])
    s3_seconds, s3_project = timed_import(
        f"s3://{bucket}/incoming", work / "blobs-s3", "s3", threads
    )
    print(row("reference: read+sha256+decode", count, ref_disk))
    print(row("images_import from folder", count, folder_seconds, ref_disk))
    print(row("reference: S3 GET+sha256+decode", count, ref_s3))
    print(row("images_import from s3://", count, s3_seconds, ref_s3))
    for project in (folder_project, s3_project):
        project.delete()


if __name__ == "__main__":
    main()
