"""``manage.py seed_demo``: an admin account, a demo project and its seed model, once.

Idempotent: the admin's generated password is kept in ``VAR_DIR/demo-admin.txt`` so every run
prints the same credentials; the images are synthetic scenes (``training.loop.scenes``) from
fixed seeds, so a rerun produces the same bytes (ingestion reports them as duplicates), and each
mask carries an idempotency key. Nothing is downloaded.

Most images are domain "A" scenes (what the seed model was trained on), a few are domain "B"
(shapes the seed has never seen: the data a retrain round adapts to). Half of the images come
with their exact ground-truth masks, stored as accepted "manual" masks and marked done, so the
export and a first retrain round have data; the other half stay ``todo`` for annotators.

The seed checkpoint (``--checkpoint``, default :data:`SEED_CHECKPOINT`) is imported into the
project when the file exists and deployed unless the project already serves a model of its own
(an imported official checkpoint or a promoted round): a rerun never rolls back a promotion.
Then the embeddings of the deployed version are queued for the worker unless they are stored
or already queued. Without the file the demo goes on with no model and says how to import one.
"""

import hashlib
import io
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from PIL import Image as PilImage

from annotation.errors import DomainError
from annotation.models import Image, Mask, Membership, Project
from annotation.services.ingest import image_ingest
from annotation.services.leases import image_mark_done
from annotation.services.masks import mask_create
from annotation.services.projects import membership_set, project_create
from engine.models import Job, ModelVersion
from engine.selectors import model_version_by_sha
from engine.services.embeddings import embedding_key, embeddings_precompute_start
from engine.services.registry import model_version_import
from storage.blobs import get_blob_store
from training.loop.scenes import generate_scene

DEMO_PROJECT = "demo"
DEMO_ADMIN = "admin"
DEMO_IMAGES = 24
CREDENTIALS_FILE = "demo-admin.txt"
SEED_CHECKPOINT = Path("training/seed/seed_vit_tiny_domain_a.pth")  # relative to BASE_DIR
SEED_NAME = "seed (synthetic domain A)"
# Far from the seeds the seed model trains on (0 upwards), so the demo shows unseen scenes.
_FIRST_SEED = 910_000
_SIZES = [(384, 512), (512, 384), (480, 640)]  # (height, width)


@dataclass(frozen=True, eq=False)
class DemoImage:
    file_name: str
    data: bytes
    domain: str
    labelled: bool  # ground truth stored as accepted manual masks, image marked done
    masks: list[np.ndarray]  # H x W bool, the visible region of each object, back to front


def demo_domain(index: int) -> str:
    """Every fifth image (3, 8, 13, ...) is domain "B", the rest domain "A"."""
    return "B" if index % 5 == 3 else "A"


def demo_labelled(index: int) -> bool:
    """Even-indexed images carry their ground truth: half of the demo, both domains."""
    return index % 2 == 0


def demo_scene_args(index: int) -> tuple[int, str, tuple[int, int]]:
    """``(seed, domain, (height, width))`` of the ``index``-th image for ``generate_scene``."""
    if index < 0:
        raise ValueError(f"demo image index must be non-negative, got {index}")
    return _FIRST_SEED + index, demo_domain(index), _SIZES[index % len(_SIZES)]


def demo_file_name(index: int) -> str:
    """``demo-NN-D.jpg`` (every fourth one ``.png``), D the scene's domain."""
    extension = "png" if index % 4 == 3 else "jpg"
    return f"demo-{index + 1:02d}-{demo_domain(index)}.{extension}"


@lru_cache(maxsize=8)  # a scene takes ~0.5 s to generate; reruns in one process reuse it
def demo_image(index: int) -> DemoImage:
    """The ``index``-th demo image (same bytes every time) with its exact instance masks."""
    scene = generate_scene(*demo_scene_args(index))
    file_name = demo_file_name(index)
    out = io.BytesIO()
    picture = PilImage.fromarray(scene.image, "RGB")
    if file_name.endswith(".png"):
        picture.save(out, "PNG", optimize=True)
    else:
        picture.save(out, "JPEG", quality=90)
    return DemoImage(
        file_name=file_name,
        data=out.getvalue(),
        domain=scene.domain,
        labelled=demo_labelled(index),
        masks=list(scene.masks),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Command(BaseCommand):
    help = (
        "Create (once) an admin account and a demo project of synthetic scenes, half of them "
        "labelled, and import and deploy the seed model when its checkpoint is present."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--images", type=int, default=DEMO_IMAGES, help="number of demo images (default 24)"
        )
        parser.add_argument(
            "--checkpoint",
            default=str(SEED_CHECKPOINT),
            help=f"the seed checkpoint to import and deploy (default: {SEED_CHECKPOINT})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count = options["images"]
        if count < 0:
            raise CommandError(f"--images must be non-negative, got {count}")
        admin, password = self._admin()
        project = self._project(admin)
        self._images(project, admin, count)
        version = self._seed_model(project, self._checkpoint_path(options["checkpoint"]))
        if version is not None:
            self._embeddings(project, admin)
        host = os.environ.get("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "8000")
        shown = password if password is not None else "(password unknown: see below)"
        self.stdout.write(f"Log in at http://{host}:{port}/ as {admin.username} / {shown}")
        if password is None:
            self.stdout.write(
                f"The user {admin.username!r} was not created by this command or its password "
                f"changed since; set one with: manage.py changepassword {admin.username}"
            )

    # --- images and masks ----------------------------------------------------------------------

    def _images(self, project: Project, admin: User, count: int) -> None:
        images_before = project.images.count()
        masks_before = Mask.objects.filter(project=project).count()
        for index in range(count):  # one at a time: a scene's masks are megabytes
            if self._seeded(project, index):
                continue
            item = demo_image(index)
            image = image_ingest(project=project, data=item.data, file_name=item.file_name).image
            if image is None or not item.labelled:
                continue
            for number, mask in enumerate(item.masks):
                mask_create(
                    image=image,
                    binary=mask,
                    source=Mask.Source.MANUAL,
                    status=Mask.Status.ACCEPTED,
                    annotator=None,  # ground truth, imported: nobody's work in the stats
                    idempotency_key=f"seed-demo:{image.sha256}:{number}",
                )
            if image.status != Image.Status.DONE:
                image_mark_done(image=image, user=admin)
        images = project.images.count()
        todo = project.images.filter(status=Image.Status.TODO).count()
        masks = Mask.objects.filter(project=project).count()
        self.stdout.write(
            f"Demo project {project.name!r}: {images} images ({images - images_before} new, "
            f"{todo} to do), {masks} accepted masks ({masks - masks_before} new)."
        )

    def _seeded(self, project: Project, index: int) -> bool:
        """Whether an earlier run finished this image: it is there and, when labelled, done
        (marked after its last mask), so a rerun need not generate the scene again."""
        statuses = set(
            project.images.filter(file_name=demo_file_name(index)).values_list("status", flat=True)
        )
        return Image.Status.DONE in statuses or (bool(statuses) and not demo_labelled(index))

    # --- the seed model ------------------------------------------------------------------------

    def _checkpoint_path(self, given: str) -> Path:
        path = Path(given).expanduser()
        return path if path.is_absolute() else Path(settings.BASE_DIR) / path

    def _seed_model(self, project: Project, path: Path) -> ModelVersion | None:
        """Import (once) and deploy the seed; the project's deployed version, or None."""
        if not path.is_file():
            if project.deployed_version_id is not None:
                self.stdout.write(
                    f"No seed checkpoint at {path}; the project serves model version "
                    f"{project.deployed_version_id}."
                )
                return project.deployed_version
            self.stdout.write(
                f"No seed model: {path} does not exist, so the demo has no model and the "
                f"annotation tool gives no masks. Import one (e.g. an official SAM checkpoint) "
                f"with: python manage.py import_checkpoint {project.name} "
                f"path/to/sam_vit_b_01ec64.pth --arch vit_b --deploy"
            )
            return None
        existing = model_version_by_sha(project=project, sha256=_sha256(path))
        if existing is not None:
            self.stdout.write(
                f"Seed model: {path.name} is model version {existing.pk} already"
                f"{self._deployed_note(project, existing)}."
            )
            return project.deployed_version
        current = project.deployed_version
        # Replace only nothing or an earlier seed: never an imported model or a promoted round.
        deploy = current is None or (current.name == SEED_NAME and current.round is None)
        try:
            version = model_version_import(
                project=project, path_or_file=path, name=SEED_NAME, deploy=deploy
            )
        except DomainError as exc:
            self.stderr.write(f"The seed model {path} was not imported: {exc.message}")
            return project.deployed_version
        project.refresh_from_db(fields=["deployed_version"])
        self.stdout.write(
            f"Seed model: imported {path.name} as model version {version.pk} ({version.arch})"
            f"{self._deployed_note(project, version)}."
        )
        return project.deployed_version

    def _deployed_note(self, project: Project, version: ModelVersion) -> str:
        if project.deployed_version_id == version.pk:
            return ", deployed: clicks in the annotation tool give masks"
        return f", not deployed (the project serves version {project.deployed_version_id})"

    def _embeddings(self, project: Project, admin: User) -> None:
        """Queue the deployed version's embeddings unless they are stored or already queued."""
        version = project.deployed_version
        if version is None:
            return
        store = get_blob_store()
        missing = sum(
            not store.exists(embedding_key(model_version_id=version.pk, image_sha256=sha256))
            for sha256 in project.images.values_list("sha256", flat=True)
        )
        pending = (
            Job.objects.filter(
                project=project, kind=Job.Kind.EMBED, params__model_version_id=version.pk
            )
            .exclude(status__in=Job.FINISHED)
            .first()
        )
        if missing == 0:
            self.stdout.write(f"Embeddings of model version {version.pk}: all stored.")
        elif pending is not None:
            self.stdout.write(
                f"Embeddings of model version {version.pk}: {missing} missing, job {pending.pk} "
                f"is {pending.status}."
            )
        else:
            job = embeddings_precompute_start(project=project, model_version=version, user=admin)
            self.stdout.write(
                f"Embeddings of model version {version.pk}: {missing} missing, queued as job "
                f"{job.pk} for the worker."
            )

    # --- account and project -------------------------------------------------------------------

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
                description=(
                    "Synthetic scenes with exact masks: mostly domain A (warm ellipses, rings, "
                    "blobs, arcs: what the seed model knows), a few domain B (cool polygons, "
                    "crosses, frames, L-shapes). Half are labelled, half left to annotate."
                ),
                creator=admin,
            )
            self.stdout.write(f"Created project {DEMO_PROJECT!r}.")
        elif not Membership.objects.filter(project=project, user=admin).exists():
            membership_set(project=project, user=admin, role=Membership.Role.ADMIN)
        return project
