"""``manage.py seed_demo``: an admin account and a demo project with masks, once.

Idempotent: the admin's generated password is kept in ``VAR_DIR/demo-admin.txt`` so every run
prints the same credentials; the images are generated from fixed seeds, so a rerun produces the
same bytes (ingestion reports them as duplicates), and each mask carries an idempotency key.
Nothing is downloaded: the images are textured backgrounds with overlapping ellipses,
rectangles and polygons drawn with Pillow, and every shape's visible region is stored as an
accepted "manual" mask, so exporting the demo project gives a meaningful dataset.
"""

import io
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from PIL import Image as PilImage
from PIL import ImageDraw

from annotation.models import Mask, Membership, Project
from annotation.services.ingest import images_ingest_batch
from annotation.services.masks import mask_create
from annotation.services.projects import membership_set, project_create

DEMO_PROJECT = "demo"
DEMO_ADMIN = "admin"
DEMO_IMAGES = 24
CREDENTIALS_FILE = "demo-admin.txt"
_SEED = 7_100_2023
_SIZES = [(640, 480), (800, 600), (512, 512), (720, 480), (480, 640)]
_MIN_MASK_AREA = 150  # pixels: slivers left after occlusion are not worth a mask


@dataclass(frozen=True)
class DemoImage:
    file_name: str
    data: bytes
    masks: list[np.ndarray]  # H x W bool, the visible region of each shape, back to front


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A two-colour gradient with stripes and grain: H x W x 3 float in [0, 255]."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    first, second = rng.uniform(40, 215, size=(2, 3)).astype(np.float32)
    pixels = first * (1 - ramp[..., None]) + second * ramp[..., None]
    period = rng.uniform(9, 30)
    stripes = np.sin((xs * math.sin(angle) - ys * math.cos(angle)) / period * 2 * math.pi)
    pixels += (stripes * rng.uniform(4, 12))[..., None]
    pixels += rng.normal(0, 9, size=pixels.shape).astype(np.float32)
    return pixels


def _polygon_points(rng: np.random.Generator, width: int, height: int) -> list[tuple[float, float]]:
    """A star-shaped simple polygon (vertices sorted by angle around a centre)."""
    cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
    radius = rng.uniform(0.08, 0.22) * min(width, height)
    count = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * math.pi, size=count))
    radii = radius * rng.uniform(0.55, 1.0, size=count)
    return [
        (float(cx + r * math.cos(a)), float(cy + r * math.sin(a)))
        for a, r in zip(angles, radii, strict=True)
    ]


def _rotated_ellipse(
    rng: np.random.Generator, width: int, height: int
) -> list[tuple[float, float]]:
    cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
    rx = rng.uniform(0.06, 0.2) * width
    ry = rng.uniform(0.06, 0.2) * height
    tilt = rng.uniform(0, math.pi)
    points = []
    for step in range(72):
        t = 2 * math.pi * step / 72
        x, y = rx * math.cos(t), ry * math.sin(t)
        points.append(
            (
                float(cx + x * math.cos(tilt) - y * math.sin(tilt)),
                float(cy + x * math.sin(tilt) + y * math.cos(tilt)),
            )
        )
    return points


def _rectangle(rng: np.random.Generator, width: int, height: int) -> list[tuple[float, float]]:
    cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
    half_w = rng.uniform(0.05, 0.18) * width
    half_h = rng.uniform(0.05, 0.18) * height
    tilt = rng.uniform(-0.6, 0.6) if rng.random() < 0.6 else 0.0
    corners = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
    return [
        (
            float(cx + x * math.cos(tilt) - y * math.sin(tilt)),
            float(cy + x * math.sin(tilt) + y * math.cos(tilt)),
        )
        for x, y in corners
    ]


_SHAPES = [_rotated_ellipse, _rectangle, _polygon_points]


def _shape_mask(points: list[tuple[float, float]], width: int, height: int) -> np.ndarray:
    canvas = PilImage.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    return np.asarray(canvas) > 0


def demo_image(index: int) -> DemoImage:
    """The ``index``-th demo image (same bytes every time) with one mask per visible shape."""
    rng = np.random.default_rng(_SEED + index)
    width, height = _SIZES[int(rng.integers(len(_SIZES)))]
    pixels = _background(rng, width, height)
    owner = np.full((height, width), -1, dtype=np.int16)
    shape_count = int(rng.integers(4, 8))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for shape in range(shape_count):
        points = _SHAPES[int(rng.integers(len(_SHAPES)))](rng, width, height)
        region = _shape_mask(points, width, height)
        colour = rng.uniform(20, 235, size=3).astype(np.float32)
        light = 0.8 + 0.35 * (xs / width + ys / height) / 2
        pixels[region] = colour * light[region][:, None]
        owner[region] = shape
    pixels += rng.normal(0, 3, size=pixels.shape).astype(np.float32)
    picture = PilImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    if index % 4 == 3:
        picture.save(out, "PNG", optimize=True)
        file_name = f"demo-{index + 1:02d}.png"
    else:
        picture.save(out, "JPEG", quality=90)
        file_name = f"demo-{index + 1:02d}.jpg"
    masks = [owner == shape for shape in range(shape_count)]
    masks = [mask for mask in masks if int(mask.sum()) >= _MIN_MASK_AREA]
    return DemoImage(file_name=file_name, data=out.getvalue(), masks=masks)


class Command(BaseCommand):
    help = "Create (once) an admin account and a demo project with generated images and masks."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--images", type=int, default=DEMO_IMAGES, help="number of demo images (default 24)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        admin, password = self._admin()
        project = self._project(admin)
        images_before = project.images.count()
        masks_before = Mask.objects.filter(project=project).count()
        generated = [demo_image(index) for index in range(options["images"])]
        outcomes = images_ingest_batch(
            project=project, files=[(item.file_name, item.data) for item in generated]
        )
        for item, outcome in zip(generated, outcomes, strict=True):
            image = outcome.image
            if image is None:
                continue
            for number, mask in enumerate(item.masks):
                mask_create(
                    image=image,
                    binary=mask,
                    source=Mask.Source.MANUAL,
                    status=Mask.Status.ACCEPTED,
                    annotator=admin,
                    idempotency_key=f"seed-demo:{image.sha256}:{number}",
                )
        images = project.images.count()
        masks = Mask.objects.filter(project=project).count()
        self.stdout.write(
            f"Demo project {project.name!r}: {images} images ({images - images_before} new), "
            f"{masks} accepted masks ({masks - masks_before} new)."
        )
        host = os.environ.get("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "8000")
        shown = password if password is not None else "(password unknown: see below)"
        self.stdout.write(f"Log in at http://{host}:{port}/ as {admin.username} / {shown}")
        if password is None:
            self.stdout.write(
                f"The user {admin.username!r} was not created by this command or its password "
                f"changed since; set one with: manage.py changepassword {admin.username}"
            )

    def _credentials_path(self) -> Path:
        return Path(settings.VAR_DIR) / CREDENTIALS_FILE

    def _admin(self) -> tuple[User, str | None]:
        """The demo superuser and its password (None when it was made elsewhere)."""
        path = self._credentials_path()
        saved: tuple[str, str] | None = None
        if path.is_file():
            lines = path.read_text(encoding="utf-8").split()
            if len(lines) == 2:
                saved = (lines[0], lines[1])
        username, password = saved or (DEMO_ADMIN, secrets.token_urlsafe(12))
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_superuser(username, email="", password=password)
            if saved is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{username}\n{password}\n", encoding="utf-8")
                path.chmod(0o600)
            self.stdout.write(f"Created superuser {username!r}.")
            return user, password
        if saved is None or not user.check_password(password):
            return user, None  # made elsewhere, or its password was changed since
        return user, password

    def _project(self, admin: User) -> Project:
        project = Project.objects.filter(name=DEMO_PROJECT).first()
        if project is None:
            project = project_create(
                name=DEMO_PROJECT,
                description="Generated shapes on textured backgrounds, one mask per shape.",
                creator=admin,
            )
            self.stdout.write(f"Created project {DEMO_PROJECT!r}.")
        elif not Membership.objects.filter(project=project, user=admin).exists():
            membership_set(project=project, user=admin, role=Membership.Role.ADMIN)
        return project
