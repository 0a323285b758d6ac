import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from PIL import Image as PILImage
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from annotation.errors import ExportRefused
from annotation.models import Image, Mask, Project, Stage
from annotation.services import export as export_service
from annotation.services.export import export_run, export_start
from annotation.services.masks import mask_create
from annotation.services.review import mask_approve, mask_fix, mask_reject
from engine.models import Job
from storage.blobs import get_blob_store
from tests.s3server import s3_test_client

pytestmark = pytest.mark.django_db

SIZES = [(64, 48), (40, 30), (50, 50), (33, 71), (80, 20)]  # (width, height)


@dataclass
class Dataset:
    project: Project
    images: list[Image] = field(default_factory=list)
    pixels: dict[int, np.ndarray] = field(default_factory=dict)  # mask id -> H x W bool
    by_status: dict[str, set[int]] = field(default_factory=dict)

    def ids(self, **filters: str) -> set[int]:
        masks = Mask.objects.filter(project=self.project, **filters)
        return set(masks.values_list("id", flat=True))


def image_png(width: int, height: int, seed: int) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def add_image(project: Project, width: int, height: int, seed: int) -> Image:
    data = image_png(width, height, seed)
    sha = hashlib.sha256(data).hexdigest()
    get_blob_store().put_bytes(f"images/{sha}", data)
    return Image.objects.create(
        project=project,
        blob_key=f"images/{sha}",
        sha256=sha,
        width=width,
        height=height,
        file_name=f"photo_{seed}.png",
        format="PNG",
        byte_size=len(data),
    )


def ellipse(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    ry, rx = rng.uniform(0.1, 0.3) * height + 1, rng.uniform(0.1, 0.3) * width + 1
    return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0


def build_dataset(project: Project) -> Dataset:
    """Per image: 2 accepted manual masks, 1 accepted automatic with scores, 1 rejected, 1
    proposed."""
    rng = np.random.default_rng(7)
    data = Dataset(project=project)
    kinds = [
        ("manual", "accepted", Stage.ASSISTED_MANUAL),
        ("manual", "accepted", Stage.ASSISTED_MANUAL),
        ("automatic", "accepted", Stage.FULLY_AUTOMATIC),
        ("assisted", "rejected", Stage.SEMI_AUTOMATIC),
        ("assisted", "proposed", Stage.SEMI_AUTOMATIC),
    ]
    for seed, (width, height) in enumerate(SIZES):
        image = add_image(project, width, height, seed)
        data.images.append(image)
        for source, status, stage in kinds:
            pixels = ellipse(height, width, rng)
            scores: dict[str, Any] = {}
            if source == "automatic":
                scores = {
                    "predicted_iou": 0.91,
                    "stability_score": 0.97,
                    "point_coords": [[width / 2, height / 2]],
                    "crop_box": [0, 0, width, height],
                }
            mask = mask_create(
                image=image, binary=pixels, source=source, status=status, stage=stage, **scores
            )
            data.pixels[mask.pk] = pixels
    return data


@pytest.fixture
def dataset() -> Dataset:
    return build_dataset(Project.objects.create(name="Street Scenes"))


def run_export(project: Project, fmt: str, **kwargs: object) -> Job:
    job = export_start(project=project, fmt=fmt, enqueue=False, **kwargs)  # type: ignore[arg-type]
    export_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    return job


def coco_document(job: Job) -> dict:
    [file] = job.result["files"]
    return json.loads(get_blob_store().get_bytes(file["key"]))


def decode(segmentation: dict) -> np.ndarray:
    rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def sa1b_members(job: Job) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    for file in job.result["files"]:
        with tarfile.open(fileobj=io.BytesIO(get_blob_store().get_bytes(file["key"]))) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member)
                assert extracted is not None
                members[member.name] = extracted.read()
    return members


# --- COCO ------------------------------------------------------------------------------------


def test_coco_export_loads_in_pycocotools_and_every_mask_equals_the_stored_one(dataset, tmp_path):
    job = run_export(dataset.project, "coco")
    path = tmp_path / "coco.json"
    path.write_bytes(get_blob_store().get_bytes(job.result["files"][0]["key"]))
    coco = COCO(str(path))
    accepted = dataset.ids(status="accepted")
    assert set(coco.getAnnIds()) == accepted
    assert set(coco.getImgIds()) == {image.pk for image in dataset.images}
    assert coco.loadCats(coco.getCatIds()) == [
        {"id": 1, "name": "object", "supercategory": "object", "class_agnostic": True}
    ]
    for ann in coco.loadAnns(coco.getAnnIds()):
        decoded = coco.annToMask(ann).astype(bool)
        assert np.array_equal(decoded, dataset.pixels[ann["id"]]), ann["id"]
        assert ann["iscrowd"] == 0
        assert isinstance(ann["segmentation"]["counts"], str)
        assert ann["area"] == int(dataset.pixels[ann["id"]].sum())


def test_coco_export_evaluated_against_itself_gives_ap_1(dataset, tmp_path):
    job = run_export(dataset.project, "coco")
    path = tmp_path / "coco.json"
    path.write_bytes(get_blob_store().get_bytes(job.result["files"][0]["key"]))
    truth = COCO(str(path))
    detections = [
        {
            "image_id": ann["image_id"],
            "category_id": ann["category_id"],
            "segmentation": ann["segmentation"],
            "score": 1.0,
        }
        for ann in truth.loadAnns(truth.getAnnIds())
    ]
    evaluation = COCOeval(truth, truth.loadRes(detections), iouType="segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # AP @ IoU 0.50:0.95
    assert evaluation.stats[1] == pytest.approx(1.0)  # AP @ IoU 0.50


def test_coco_records_carry_the_documented_fields(dataset):
    document = coco_document(run_export(dataset.project, "coco"))
    image = document["images"][0]
    stored = dataset.images[0]
    assert image == {
        "id": stored.pk,
        "width": stored.width,
        "height": stored.height,
        "file_name": stored.file_name,
        "sha256": stored.sha256,
    }
    automatic = [a for a in document["annotations"] if a["source"] == "automatic"]
    manual = [a for a in document["annotations"] if a["source"] == "manual"]
    assert automatic[0]["predicted_iou"] == 0.91
    assert automatic[0]["stability_score"] == 0.97
    assert automatic[0]["stage"] == "fully_automatic"
    assert "predicted_iou" not in manual[0]
    assert manual[0]["segmentation"]["size"] == [stored.height, stored.width]
    assert document["info"]["project"] == "Street Scenes"
    assert document["info"]["filters"] == {"status": "accepted", "stage": None, "source": None}
    ids = [a["id"] for a in document["annotations"]]
    assert ids == sorted(ids)


def test_result_lists_the_file_with_its_key_and_byte_size(dataset):
    job = run_export(dataset.project, "coco")
    [file] = job.result["files"]
    assert file["name"] == "street-scenes-coco.json"
    assert file["key"] == f"exports/{job.pk}/street-scenes-coco.json"
    assert file["bytes"] == get_blob_store().size(file["key"])
    assert job.result["format"] == "coco"
    assert job.result["images"] == len(SIZES)
    assert job.result["annotations"] == 3 * len(SIZES)
    assert job.result["out"] is None
    assert job.progress_done == job.progress_total == 3 * len(SIZES)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, {"status": "accepted"}),
        ({"status": "rejected"}, {"status": "rejected"}),
        ({"status": "proposed"}, {"status": "proposed"}),
        ({"source": "automatic"}, {"status": "accepted", "source": "automatic"}),
        ({"stage": "assisted_manual"}, {"status": "accepted", "stage": "assisted_manual"}),
        ({"stage": "semi_automatic"}, {"status": "accepted", "stage": "semi_automatic"}),
    ],
)
def test_coco_export_holds_exactly_the_filtered_masks(dataset, filters, expected):
    document = coco_document(run_export(dataset.project, "coco", **filters))
    assert {a["id"] for a in document["annotations"]} == dataset.ids(**expected)
    with_masks = {a["image_id"] for a in document["annotations"]}
    assert {i["id"] for i in document["images"]} == with_masks


def test_a_reviewed_export_holds_only_the_masks_a_reviewer_approved_or_fixed(dataset):
    reviewer = User.objects.create_user("rita")
    first, second = sorted(dataset.ids(status="accepted", source="manual"))[:2]
    mask_approve(mask=Mask.objects.get(pk=first), reviewer=reviewer)
    mask_fix(
        mask=Mask.objects.get(pk=second), reviewer=reviewer, rle=Mask.objects.get(pk=second).rle
    )
    mask_reject(
        mask=Mask.objects.get(pk=dataset.ids(status="accepted", source="automatic").pop()),
        reviewer=reviewer,
        reason="leaks",
    )
    document = coco_document(run_export(dataset.project, "coco", reviewed=True))
    assert {a["id"] for a in document["annotations"]} == {first, second}
    assert {i["id"] for i in document["images"]} == {
        Mask.objects.get(pk=first).image_id,
        Mask.objects.get(pk=second).image_id,
    }
    assert document["info"]["filters"]["reviewed"] is True
    members = sa1b_members(run_export(dataset.project, "sa1b", reviewed=True, include_images=False))
    exported = [
        annotation["id"]
        for name, body in members.items()
        if name.endswith(".json")
        for annotation in json.loads(body)["annotations"]
    ]
    assert sorted(exported) == sorted([first, second])
    # Without the flag nothing changes: every accepted mask, reviewed or not.
    plain = coco_document(run_export(dataset.project, "coco"))
    assert "reviewed" not in plain["info"]["filters"]
    assert {a["id"] for a in plain["annotations"]} == dataset.ids(status="accepted")


def test_masks_of_another_project_are_not_exported(dataset):
    other = build_dataset(Project.objects.create(name="other"))
    document = coco_document(run_export(dataset.project, "coco"))
    exported = {a["id"] for a in document["annotations"]}
    assert exported == dataset.ids(status="accepted")
    assert not exported & other.ids()


def test_a_mask_selected_between_the_two_coco_passes_never_points_at_an_unlisted_image(
    dataset, monkeypatch
):
    late_image = add_image(dataset.project, 20, 20, seed=99)
    pixels = np.ones((20, 20), dtype=bool)
    late = mask_create(image=late_image, binary=pixels, source="manual", status="proposed")
    select_masks = export_service.masks_for_export

    def accepted_meanwhile(**filters):
        Mask.objects.filter(pk=late.pk).update(status="accepted")  # a reviewer, mid-export
        return select_masks(**filters)

    monkeypatch.setattr(export_service, "masks_for_export", accepted_meanwhile)
    document = coco_document(run_export(dataset.project, "coco"))
    listed = {image["id"] for image in document["images"]}
    assert late_image.pk not in listed
    assert {a["image_id"] for a in document["annotations"]} <= listed
    assert {a["id"] for a in document["annotations"]} == dataset.ids(status="accepted") - {late.pk}


# --- SA-1B -----------------------------------------------------------------------------------


def test_sa1b_export_packs_n_images_per_shard_with_the_image_bytes(dataset):
    job = run_export(dataset.project, "sa1b", shard_size=2)
    names = [file["name"] for file in job.result["files"]]
    assert names == ["sa_000000.tar", "sa_000001.tar", "sa_000002.tar"]
    counts = []
    for file in job.result["files"]:
        with tarfile.open(fileobj=io.BytesIO(get_blob_store().get_bytes(file["key"]))) as tar:
            counts.append(sum(m.name.endswith(".json") for m in tar.getmembers()))
    assert counts == [2, 2, 1]
    members = sa1b_members(job)
    for image in dataset.images:
        assert members[f"sa_{image.pk}.png"] == get_blob_store().get_bytes(image.blob_key)
    assert job.result["images"] == len(SIZES)
    assert job.result["annotations"] == 3 * len(SIZES)


def test_sa1b_json_has_the_design_fields_and_decodes_to_the_stored_masks(dataset):
    members = sa1b_members(run_export(dataset.project, "sa1b"))
    seen = set()
    for image in dataset.images:
        document = json.loads(members[f"sa_{image.pk}.json"])
        assert document["image"] == {
            "image_id": image.pk,
            "width": image.width,
            "height": image.height,
            "file_name": f"sa_{image.pk}.png",
        }
        for ann in document["annotations"]:
            assert set(ann) == {
                "id",
                "segmentation",
                "bbox",
                "area",
                "predicted_iou",
                "stability_score",
                "crop_box",
                "point_coords",
            }
            assert np.array_equal(decode(ann["segmentation"]), dataset.pixels[ann["id"]])
            stored = Mask.objects.get(pk=ann["id"])
            assert ann["bbox"] == stored.bbox
            assert ann["predicted_iou"] == stored.predicted_iou  # None -> null when unknown
            assert ann["crop_box"] == stored.crop_box
            seen.add(ann["id"])
    assert seen == dataset.ids(status="accepted")


def test_sa1b_export_without_images_holds_only_the_json(dataset):
    members = sa1b_members(run_export(dataset.project, "sa1b", include_images=False))
    assert sorted(members) == sorted(f"sa_{image.pk}.json" for image in dataset.images)


# --- destinations ----------------------------------------------------------------------------


def test_export_to_a_local_folder_writes_the_same_files_there(dataset, tmp_path):
    out = tmp_path / "exports" / "street"  # the parent exists, the folder does not yet
    (tmp_path / "exports").mkdir()
    job = run_export(dataset.project, "sa1b", shard_size=3, out=str(out))
    assert job.result["out"] == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["sa_000000.tar", "sa_000001.tar"]
    for file in job.result["files"]:
        assert (out / file["name"]).read_bytes() == get_blob_store().get_bytes(file["key"])


def test_export_to_an_s3_location_uploads_every_file(dataset, s3_endpoint, s3_bucket):
    with override_settings(S3_ENDPOINT_URL=s3_endpoint, S3_MAX_ATTEMPTS=2):
        job = run_export(dataset.project, "sa1b", shard_size=2, out=f"s3://{s3_bucket}/ds/v1")
    client = s3_test_client(s3_endpoint)
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="ds/v1/")
    keys = sorted(obj["Key"] for obj in listed.get("Contents", []))
    assert keys == ["ds/v1/sa_000000.tar", "ds/v1/sa_000001.tar", "ds/v1/sa_000002.tar"]
    body = client.get_object(Bucket=s3_bucket, Key="ds/v1/sa_000001.tar")["Body"].read()
    assert body == get_blob_store().get_bytes(job.result["files"][1]["key"])


def test_leftover_temp_files_are_removed_after_the_export(dataset, settings):
    run_export(dataset.project, "sa1b", shard_size=2)
    assert list((Path(settings.VAR_DIR) / "tmp").glob("export-*")) == []


@pytest.mark.parametrize(
    ("make_out", "message"),
    [
        (lambda tmp: tmp / "missing" / "deeper", "does not exist"),
        (lambda tmp: tmp / "a-file" / "sub", "does not exist"),
        (lambda tmp: tmp / "a-file", "not a folder"),
        (lambda tmp: "/sys/fs/maskloop-export", "is not writable"),  # sysfs: not even for root
        (lambda tmp: "s3://", "without a bucket"),
        (lambda tmp: "s3://Not_A_Bucket/x", "invalid S3 bucket name"),
        (lambda tmp: "ftp://host/x", "unsupported storage location"),
        (lambda tmp: "   ", "empty"),
    ],
)
def test_bad_out_is_refused_and_creates_no_job(dataset, tmp_path, make_out, message):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ExportRefused, match=message):
        export_start(project=dataset.project, fmt="coco", out=str(make_out(tmp_path)))
    assert Job.objects.count() == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_folder_is_refused_and_creates_no_job(dataset, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ExportRefused, match="not writable"):
        export_start(project=dataset.project, fmt="coco", out=str(locked))
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "voc"}, "unknown format 'voc'"),
        ({"fmt": "coco", "stage": "stage_9"}, "unknown stage 'stage_9'"),
        ({"fmt": "coco", "source": "crowd"}, "unknown source 'crowd'"),
        ({"fmt": "coco", "status": "maybe"}, "unknown status 'maybe'"),
        ({"fmt": "sa1b", "shard_size": 0}, "shard size must be a positive integer"),
        ({"fmt": "coco", "reviewed": "yes"}, "reviewed must be true or false"),
    ],
)
def test_bad_parameters_are_refused_and_create_no_job(dataset, kwargs, message):
    with pytest.raises(ExportRefused, match=message):
        export_start(project=dataset.project, **kwargs)
    assert Job.objects.count() == 0
