"""Export of one automatic (or prefill) run: service, API and CLI ``--job`` filter; the SA-1B
export of a run loads with pycocotools."""

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from annotation.errors import ExportRefused
from annotation.models import Image, Mask, Project, Stage
from annotation.selectors.masks import mask_groups_for_export
from annotation.services.export import export_run, export_start
from annotation.services.masks import mask_create
from annotation.services.masks_bulk import masks_replace_for_run
from engine.models import Job
from storage.blobs import get_blob_store
from tests.annotation.test_export import add_image
from tests.s3server import s3_test_client

pytestmark = pytest.mark.django_db

SIZES = [(64, 48), (40, 30), (50, 50)]  # (width, height)
SA1B_FIELDS = {
    "id",
    "segmentation",
    "bbox",
    "area",
    "predicted_iou",
    "stability_score",
    "crop_box",
    "point_coords",
}


def _blob(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    ry, rx = rng.uniform(0.1, 0.3) * height + 1, rng.uniform(0.1, 0.3) * width + 1
    return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0


def _generator_records(image: Image, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """What SamAutomaticMaskGenerator(output_mode="coco_rle") returns for an image."""
    records = []
    for _ in range(n):
        pixels = _blob(image.height, image.width, rng)
        rle = mask_utils.encode(np.asfortranarray(pixels, dtype=np.uint8))
        records.append(
            {
                "segmentation": {"size": [image.height, image.width], "counts": rle["counts"]},
                "area": int(pixels.sum()),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "predicted_iou": float(rng.uniform(0.88, 1.0)),
                "point_coords": [[float(rng.uniform(0, image.width)), 3.5]],
                "stability_score": float(rng.uniform(0.95, 1.0)),
                "crop_box": [0, 0, image.width, image.height],
            }
        )
    return records


class Runs:
    """A fully automatic project: two automatic runs over its images, one prefill run, and an
    annotator's mask; ``pixels`` maps mask id -> H x W bool of what was written."""

    def __init__(self) -> None:
        self.project = Project.objects.create(name="Aerial", stage=Stage.FULLY_AUTOMATIC)
        self.images = [add_image(self.project, w, h, seed) for seed, (w, h) in enumerate(SIZES)]
        self.run = Job.objects.create(project=self.project, kind=Job.Kind.AUTOMATIC)
        self.other_run = Job.objects.create(project=self.project, kind=Job.Kind.AUTOMATIC)
        self.prefill = Job.objects.create(project=self.project, kind=Job.Kind.PREFILL)
        self.pixels: dict[int, np.ndarray] = {}
        rng = np.random.default_rng(11)
        for image in self.images:
            for job, count in ((self.run, 3), (self.other_run, 2), (self.prefill, 1)):
                prefill = job is self.prefill
                masks_replace_for_run(
                    job=job,
                    image=image,
                    records=_generator_records(image, rng, count),
                    source="prefill" if prefill else "automatic",
                    status="proposed" if prefill else "accepted",
                    stage="semi_automatic" if prefill else "fully_automatic",
                    model_version=None,
                )
            mask_create(image=image, binary=_blob(image.height, image.width, rng), source="manual")
        for mask in Mask.objects.filter(project=self.project):
            rle = {"size": [mask.image.height, mask.image.width], "counts": mask.rle_counts}
            self.pixels[mask.pk] = mask_utils.decode(rle).astype(bool)

    def ids(self, job: Job) -> set[int]:
        return set(Mask.objects.filter(job=job).values_list("id", flat=True))


@pytest.fixture
def runs() -> Runs:
    return Runs()


def _export(project: Project, fmt: str, **kwargs: Any) -> Job:
    job = export_start(project=project, fmt=fmt, enqueue=False, **kwargs)
    export_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    return job


def _shard_members(shards: list[bytes]) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    for shard in shards:
        with tarfile.open(fileobj=io.BytesIO(shard)) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member)
                assert extracted is not None
                members[member.name] = extracted.read()
    return members


def _stored_shards(job: Job) -> list[bytes]:
    return [get_blob_store().get_bytes(file["key"]) for file in job.result["files"]]


def _check_sa1b_of_run(members: dict[str, bytes], runs: Runs, run: Job) -> None:
    """Every image's JSON holds exactly the run's masks, each decoding with pycocotools to
    the pixels written, with the generator's scores."""
    seen: set[int] = set()
    for image in runs.images:
        document = json.loads(members[f"sa_{image.pk}.json"])
        assert document["image"] == {
            "image_id": image.pk,
            "width": image.width,
            "height": image.height,
            "file_name": f"sa_{image.pk}.png",
        }
        assert members[f"sa_{image.pk}.png"] == get_blob_store().get_bytes(image.blob_key)
        ids = [ann["id"] for ann in document["annotations"]]
        assert ids == sorted(ids)  # id order within the image
        for ann in document["annotations"]:
            assert set(ann) == SA1B_FIELDS
            assert isinstance(ann["segmentation"]["counts"], str)
            rle = {**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()}
            assert np.array_equal(mask_utils.decode(rle).astype(bool), runs.pixels[ann["id"]])
            assert ann["area"] == int(mask_utils.area(rle))
            assert ann["bbox"] == [int(v) for v in mask_utils.toBbox(rle)]
            stored = Mask.objects.get(pk=ann["id"])
            assert ann["predicted_iou"] == pytest.approx(stored.predicted_iou)
            assert 0.95 <= ann["stability_score"] <= 1.0
            assert ann["crop_box"] == [0, 0, image.width, image.height]
            assert len(ann["point_coords"]) == 1
            seen.add(ann["id"])
    assert seen == runs.ids(run)


def test_sa1b_export_of_an_automatic_run_loads_with_pycocotools(runs):
    job = _export(runs.project, "sa1b", job_id=runs.run.pk, shard_size=2)
    assert [file["name"] for file in job.result["files"]] == ["sa_000000.tar", "sa_000001.tar"]
    assert job.result["annotations"] == 3 * len(SIZES)
    assert job.result["images"] == len(SIZES)
    _check_sa1b_of_run(_shard_members(_stored_shards(job)), runs, runs.run)


def test_coco_export_of_a_run_loads_in_pycocotools_coco(runs, tmp_path):
    job = _export(runs.project, "coco", job_id=runs.other_run.pk)
    [file] = job.result["files"]
    path = tmp_path / "run.json"
    path.write_bytes(get_blob_store().get_bytes(file["key"]))
    coco = COCO(str(path))
    assert set(coco.getAnnIds()) == runs.ids(runs.other_run)
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert np.array_equal(coco.annToMask(ann).astype(bool), runs.pixels[ann["id"]])
        assert ann["source"] == "automatic"
    document = json.loads(path.read_text())
    assert document["info"]["filters"]["job_id"] == runs.other_run.pk


def test_a_prefill_run_exports_its_proposed_masks(runs):
    job = _export(runs.project, "sa1b", job_id=runs.prefill.pk, status="proposed")
    members = _shard_members(_stored_shards(job))
    ids = {
        ann["id"]
        for name, body in members.items()
        if name.endswith(".json")
        for ann in json.loads(body)["annotations"]
    }
    assert ids == runs.ids(runs.prefill)


def test_without_a_job_filter_every_accepted_mask_is_exported(runs):
    job = _export(runs.project, "coco")
    # 3 + 2 automatic masks and 1 manual one per image; the prefill masks are proposed.
    assert job.result["annotations"] == 6 * len(SIZES)


def test_the_run_export_streams_images_and_masks_in_id_order(runs):
    groups = mask_groups_for_export(project=runs.project, job_id=runs.run.pk, chunk_size=2)
    seen_images, seen_masks = [], []
    for image, masks in groups:
        seen_images.append(image["id"])
        ids = [mask["id"] for mask in masks]
        assert ids == sorted(ids)
        seen_masks.extend(ids)
    assert seen_images == sorted(image.pk for image in runs.images)
    assert set(seen_masks) == runs.ids(runs.run)


def test_sa1b_export_of_a_run_to_a_local_folder(runs, tmp_path):
    out = tmp_path / "sa1b"
    job = _export(runs.project, "sa1b", job_id=runs.run.pk, shard_size=2, out=str(out))
    shards = [(out / file["name"]).read_bytes() for file in job.result["files"]]
    assert shards == _stored_shards(job)
    _check_sa1b_of_run(_shard_members(shards), runs, runs.run)


def test_sa1b_export_of_a_run_to_s3(runs, s3_endpoint, s3_bucket):
    with override_settings(S3_ENDPOINT_URL=s3_endpoint, S3_MAX_ATTEMPTS=2):
        _export(runs.project, "sa1b", job_id=runs.run.pk, shard_size=1, out=f"s3://{s3_bucket}/run")
    client = s3_test_client(s3_endpoint)
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="run/")
    keys = sorted(obj["Key"] for obj in listed.get("Contents", []))
    assert keys == [f"run/sa_{n:06d}.tar" for n in range(len(SIZES))]
    shards = [client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() for key in keys]
    _check_sa1b_of_run(_shard_members(shards), runs, runs.run)


# --- refusals --------------------------------------------------------------------------------


def _bad_jobs(runs: Runs) -> list[tuple[Any, str]]:
    elsewhere = Job.objects.create(
        project=Project.objects.create(name="Elsewhere"), kind=Job.Kind.AUTOMATIC
    )
    export = Job.objects.create(project=runs.project, kind=Job.Kind.EXPORT)
    return [
        (elsewhere.pk, "is not a job of project 'Aerial'"),
        (export.pk, "is a export job; only the masks of an automatic or prefill run"),
        (999_999, "is not a job of project"),
        (True, "must be a job id"),
        ("7", "must be a job id"),
    ]


def test_a_job_that_is_not_a_run_of_the_project_is_refused_and_creates_nothing(runs):
    for job_id, message in _bad_jobs(runs):
        before = Job.objects.count()
        with pytest.raises(ExportRefused, match=message):
            export_start(project=runs.project, fmt="sa1b", job_id=job_id, enqueue=False)
        assert Job.objects.count() == before


def test_api_starts_a_run_export_and_refuses_a_bad_job(
    runs, admin_user, django_capture_on_commit_callbacks
):
    from annotation.services.projects import membership_set
    from tests.factories import client_for

    membership_set(project=runs.project, user=admin_user, role="admin")
    client = client_for(admin_user)
    url = f"/api/projects/{runs.project.pk}/exports/"
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(url, {"format": "sa1b", "job": runs.run.pk}, format="json")
    assert response.status_code == 202, response.data
    assert Job.objects.get(pk=response.data["id"]).params["job_id"] == runs.run.pk
    before = Job.objects.count()
    for job_id, _message in _bad_jobs(runs)[:3]:
        response = client.post(url, {"format": "sa1b", "job": job_id}, format="json")
        assert response.status_code == 400
        assert response.data["code"] in {"export_refused", "invalid"}
    response = client.post(url, {"format": "sa1b", "job": "seven"}, format="json")
    assert response.status_code == 400
    assert "job" in response.data
    assert Job.objects.count() == before + 2  # only the two jobs _bad_jobs created


def test_cli_exports_one_run_and_refuses_a_bad_job(runs, tmp_path: Path):
    out = tmp_path / "cli"
    stdout = io.StringIO()
    call_command(
        "export_dataset",
        "Aerial",
        "--format",
        "sa1b",
        "--job",
        str(runs.run.pk),
        "--out",
        str(out),
        "--no-progress",
        stdout=stdout,
        stderr=io.StringIO(),
    )
    assert f"exported {3 * len(SIZES)} masks of {len(SIZES)} images as sa1b" in stdout.getvalue()
    shards = [path.read_bytes() for path in sorted(out.iterdir())]
    _check_sa1b_of_run(_shard_members(shards), runs, runs.run)
    export = Job.objects.create(project=runs.project, kind=Job.Kind.EXPORT)
    with pytest.raises(CommandError, match="only the masks of an automatic or prefill run"):
        call_command("export_dataset", "Aerial", "--format", "sa1b", "--job", str(export.pk))
