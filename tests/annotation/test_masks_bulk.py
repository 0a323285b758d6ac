"""masks_replace_for_run: one run's masks of one image, replaced in one transaction."""

from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from annotation.errors import InvalidMask
from annotation.models import Image, Mask, Project, Stage
from annotation.services.masks import mask_create
from annotation.services.masks_bulk import masks_replace_for_run
from engine.models import Job, ModelVersion

pytestmark = pytest.mark.django_db

H, W = 30, 40


def _image(project: Project, n: int) -> Image:
    sha = f"{n:064x}"
    return Image.objects.create(
        project=project,
        blob_key="images/" + sha,
        sha256=sha,
        width=W,
        height=H,
        format="PNG",
        byte_size=10,
    )


@pytest.fixture
def project() -> Project:
    return Project.objects.create(name="run", stage=Stage.FULLY_AUTOMATIC)


@pytest.fixture
def image(project: Project) -> Image:
    return _image(project, 1)


@pytest.fixture
def job(project: Project) -> Job:
    return Job.objects.create(project=project, kind=Job.Kind.AUTOMATIC)


def _version(project: Project, sha: str) -> ModelVersion:
    return ModelVersion.objects.create(
        project=project, arch="vit_t", checkpoint_key="models/" + sha, sha256=sha * 64
    )


def _record(y0: int, x0: int, *, counts_as: str = "str", iou: float = 0.9) -> dict[str, Any]:
    """A generator-like record: a 5x6 box at (y0, x0) as compressed COCO RLE."""
    pixels = np.zeros((H, W), dtype=np.uint8)
    pixels[y0 : y0 + 5, x0 : x0 + 6] = 1
    rle = mask_utils.encode(np.asfortranarray(pixels))
    counts = rle["counts"] if counts_as == "bytes" else rle["counts"].decode()
    return {
        "segmentation": {"size": [H, W], "counts": counts},
        "bbox": [x0, y0, 6, 5],
        "area": 30,
        "predicted_iou": iou,
        "stability_score": 0.97,
        "point_coords": [[x0 + 2.5, y0 + 2.0]],
        "crop_box": [0, 0, W, H],
    }


def _write(job: Job, image: Image, records: list[dict[str, Any]], **kw: Any) -> int:
    args: dict[str, Any] = {
        "source": "automatic",
        "status": "accepted",
        "stage": "fully_automatic",
        "model_version": None,
    }
    args.update(kw)
    return masks_replace_for_run(job=job, image=image, records=records, **args)


def test_records_are_stored_with_their_scores_job_and_provenance(job, image):
    count = _write(job, image, [_record(2, 3), _record(10, 20, counts_as="bytes", iou=0.95)])
    assert count == 2
    masks = list(Mask.objects.filter(image=image).order_by("id"))
    assert [m.job_id for m in masks] == [job.pk, job.pk]
    first = masks[0]
    assert (first.source, first.status, first.stage) == ("automatic", "accepted", "fully_automatic")
    assert first.area == 30
    assert first.bbox == [3, 2, 6, 5]
    assert first.predicted_iou == pytest.approx(0.9)
    assert first.stability_score == pytest.approx(0.97)
    assert first.point_coords == [[5.5, 4.0]]
    assert first.crop_box == [0, 0, W, H]
    assert first.project_id == image.project_id
    decoded = mask_utils.decode({"size": [H, W], "counts": masks[1].rle_counts.encode()})
    assert int(decoded[10:15, 20:26].sum()) == 30
    assert int(decoded.sum()) == 30


def test_rerunning_an_image_replaces_that_runs_masks_instead_of_duplicating(job, image):
    _write(job, image, [_record(2, 3), _record(10, 20)])
    assert _write(job, image, [_record(12, 12)]) == 1
    masks = list(Mask.objects.filter(image=image))
    assert len(masks) == 1
    assert masks[0].bbox == [12, 12, 6, 5]


def test_replacing_keeps_other_runs_other_images_and_annotator_masks(project, job, image):
    other_image = _image(project, 2)
    other_job = Job.objects.create(project=project, kind=Job.Kind.AUTOMATIC)
    annotated = mask_create(image=image, rle=_record(0, 0)["segmentation"], source="manual")
    _write(job, image, [_record(2, 3)])
    _write(job, other_image, [_record(2, 3)])
    _write(other_job, image, [_record(2, 3)])
    _write(job, image, [])  # the run found nothing on the image this time
    assert not Mask.objects.filter(job=job, image=image).exists()
    assert Mask.objects.filter(job=job, image=other_image).count() == 1
    assert Mask.objects.filter(job=other_job, image=image).count() == 1
    assert Mask.objects.filter(pk=annotated.pk, job__isnull=True).exists()


def test_a_malformed_record_names_itself_and_leaves_the_previous_masks(job, image):
    _write(job, image, [_record(2, 3)])
    before = list(Mask.objects.values_list("id", flat=True))
    bad = _record(4, 4)
    bad["segmentation"] = {"size": [H, W], "counts": "not RLE!"}
    with pytest.raises(InvalidMask, match=r"record 1: .*not a COCO compressed RLE"):
        _write(job, image, [_record(10, 10), bad])
    assert list(Mask.objects.values_list("id", flat=True)) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"segmentation": {"size": [H + 1, W], "counts": "PP"}}, "does not match the image"),
        ({"stability_score": 1.5}, "stability_score must lie in"),
        ({"crop_box": [0, 0, 1]}, "crop_box must be a list of 4"),
        ({"point_coords": "centre"}, "point_coords must be a list"),
        ({"colour": "red"}, "unknown record keys: colour"),
    ],
)
def test_each_kind_of_bad_record_is_refused_with_nothing_written(job, image, change, message):
    record = {**_record(2, 3), **change}
    with pytest.raises(InvalidMask, match=message):
        _write(job, image, [_record(10, 10), record])
    assert not Mask.objects.exists()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"source": "robot"}, "unknown source"),
        ({"status": "maybe"}, "unknown status"),
        ({"stage": "stage_4"}, "unknown stage"),
    ],
)
def test_unknown_enums_are_refused(job, image, kw, message):
    with pytest.raises(InvalidMask, match=message):
        _write(job, image, [_record(2, 3)], **kw)
    assert not Mask.objects.exists()


def test_a_job_of_another_kind_or_project_is_refused(project, image):
    export = Job.objects.create(project=project, kind=Job.Kind.EXPORT)
    with pytest.raises(InvalidMask, match="only automatic or prefill runs"):
        _write(export, image, [_record(2, 3)])
    elsewhere = Job.objects.create(
        project=Project.objects.create(name="other"), kind=Job.Kind.AUTOMATIC
    )
    with pytest.raises(InvalidMask, match="another project"):
        _write(elsewhere, image, [_record(2, 3)])
    assert not Mask.objects.exists()


def test_model_version_is_recorded_and_must_be_the_projects(project, job, image):
    version = _version(project, "1")
    _write(job, image, [_record(2, 3)], model_version=version)
    assert Mask.objects.get().model_version_id == version.pk
    foreign = _version(Project.objects.create(name="other"), "2")
    with pytest.raises(InvalidMask, match="another project"):
        _write(job, image, [_record(5, 5)], model_version=foreign)
    assert Mask.objects.get().model_version_id == version.pk


def test_binary_and_uncompressed_segmentations_are_stored_as_compressed_rle(job, image):
    pixels = np.zeros((H, W), dtype=bool)
    pixels[4:9, 7:13] = True
    # Column-major runs: background down to (4, 7), then 5 foreground pixels in each of 6 columns.
    runs = [7 * H + 4, 5, *[H - 5, 5] * 5]
    uncompressed = {"size": [H, W], "counts": [*runs, H * W - sum(runs)]}
    records = [{**_record(0, 0), "segmentation": seg} for seg in (pixels, uncompressed)]
    assert _write(job, image, records) == 2
    expected = mask_utils.encode(np.asfortranarray(pixels, dtype=np.uint8))["counts"].decode()
    assert [m.rle_counts for m in Mask.objects.order_by("id")] == [expected, expected]


def test_non_canonical_runs_are_stored_canonical(job, image):
    # [5, 0, 0, 3, rest] holds the same pixels as [5, 3, rest].
    rle = {"size": [H, W], "counts": [5, 0, 0, 3, H * W - 8]}
    _write(job, image, [{**_record(0, 0), "segmentation": rle}])
    canonical = mask_utils.frPyObjects({"size": [H, W], "counts": [5, 3, H * W - 8]}, H, W)
    mask = Mask.objects.get()
    assert mask.rle_counts == canonical["counts"].decode()
    assert mask.area == 3


_COMPARED = [
    f.attname
    for f in Mask._meta.concrete_fields
    if f.attname not in {"id", "created_at", "updated_at"}
]


def test_copy_rows_equal_orm_rows_field_by_field(project, job, image, monkeypatch):
    """The COPY writer (PostgreSQL) and bulk_create store the same values in every column."""
    from annotation.services import masks_bulk

    records = [_record(2, 3), {**_record(10, 20), "point_coords": None, "crop_box": None}]
    other = _image(project, 2)
    _write(job, image, records)
    monkeypatch.setattr(masks_bulk, "_use_copy", lambda: False)
    _write(job, other, records)
    copied = list(Mask.objects.filter(image=image).order_by("id").values(*_COMPARED))
    orm = list(Mask.objects.filter(image=other).order_by("id").values(*_COMPARED))
    for row in orm:
        row["image_id"] = image.pk
    assert copied == orm
    stamps = Mask.objects.filter(image=image).values_list("created_at", "updated_at")
    assert all(created is not None and created == updated for created, updated in stamps)


def test_a_failing_insert_rolls_back_the_delete(job, image, monkeypatch):
    from annotation.services import masks_bulk

    _write(job, image, [_record(2, 3), _record(10, 20)])
    before = sorted(Mask.objects.values_list("id", flat=True))

    def broken(rows, *, common):
        raise RuntimeError("database went away")

    monkeypatch.setattr(masks_bulk, "_insert_copy", broken)
    monkeypatch.setattr(masks_bulk, "_insert_orm", broken)
    with pytest.raises(RuntimeError):
        _write(job, image, [_record(5, 5)])
    assert sorted(Mask.objects.values_list("id", flat=True)) == before


def test_a_prefill_run_writes_proposed_masks(project, image):
    prefill = Job.objects.create(project=project, kind=Job.Kind.PREFILL)
    _write(
        prefill, image, [_record(2, 3)], source="prefill", status="proposed", stage="semi_automatic"
    )
    mask = Mask.objects.get()
    assert (mask.job_id, mask.source, mask.status) == (prefill.pk, "prefill", "proposed")
