"""Masks from a COCO file (annotation/services/coco_import.py, ``manage.py import_coco``): a
maskloop export imported into another project gives back the same pixels; polygons and
uncompressed RLE as pycocotools rasterises them; reruns add nothing; and every kind of bad file
is refused with its reasons, writing nothing (not even a job)."""

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pycocotools import mask as mask_utils

from annotation.models import Image, Mask, Project
from annotation.services.coco_import import CocoImportRefused, coco_import
from annotation.services.masks import mask_create
from engine.models import Job
from tests.annotation.test_export import add_image, coco_document, ellipse, run_export

pytestmark = pytest.mark.django_db


@pytest.fixture
def target() -> tuple[Project, list[Image]]:
    """A project holding two images (40 x 30 and 64 x 48), no masks."""
    project = Project.objects.create(name="Imported")
    return project, [add_image(project, 40, 30, 1), add_image(project, 64, 48, 2)]


def write(tmp_path: Path, document: Any, name: str = "coco.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def images_of(images: list[Image]) -> list[dict[str, Any]]:
    return [
        {"id": 100 + k, "file_name": f"export/{i.file_name}", "width": i.width, "height": i.height}
        for k, i in enumerate(images)
    ]


def one_triangle(image: Image) -> dict[str, Any]:
    """A file with one image (COCO id 100) and one triangle on it (annotation id 1)."""
    return {
        "images": images_of([image]),
        "annotations": [{"id": 1, "image_id": 100, "segmentation": [[1, 1, 20, 1, 20, 20]]}],
    }


def pixels(mask: Mask) -> np.ndarray:
    rle = {"size": [mask.image.height, mask.image.width], "counts": mask.rle_counts.encode()}
    return mask_utils.decode(rle).astype(bool)


def refused(project: Project, path: Path, **kwargs: Any) -> str:
    with pytest.raises(CocoImportRefused) as caught:
        coco_import(project=project, path=path, **kwargs)
    assert not Mask.objects.filter(project=project).exists()
    assert not Job.objects.filter(kind=Job.Kind.IMPORT_MASKS).exists()
    return caught.value.message


def test_an_export_imported_into_another_project_gives_the_same_masks(
    target: tuple[Project, list[Image]], tmp_path: Path
) -> None:
    source = Project.objects.create(name="Source")
    rng = np.random.default_rng(3)
    expected: dict[str, list[np.ndarray]] = {}
    for seed, (width, height) in ((1, (40, 30)), (2, (64, 48))):
        image = add_image(source, width, height, seed)  # the same bytes and names as target's
        masks = [ellipse(height, width, rng) for _ in range(3)]
        for binary in masks:
            mask_create(image=image, binary=binary, source="manual")
        expected[image.file_name] = masks
    path = write(tmp_path, coco_document(run_export(source, "coco")))
    project, _ = target
    summary = coco_import(project=project, path=path)
    assert (summary.images, summary.masks, summary.already) == (2, 6, 0)
    job = Job.objects.get(pk=summary.job_id)
    assert (job.kind, job.status, job.progress_done) == ("import_masks", "succeeded", 2)
    for name, masks in expected.items():
        stored = Mask.objects.filter(image__project=project, image__file_name=name).order_by("pk")
        assert [m.source for m in stored] == ["imported"] * 3
        assert all(m.status == "accepted" and m.job_id == job.pk for m in stored)
        for mask, binary in zip(stored, masks, strict=True):
            np.testing.assert_array_equal(pixels(mask), binary)
            assert mask.area == int(binary.sum())
    # The same file again adds nothing: every annotation is imported already.
    again = coco_import(project=project, path=path)
    assert (again.masks, again.already) == (0, 6)
    assert Mask.objects.filter(project=project).count() == 6


def test_polygons_and_uncompressed_rle_are_rasterised_as_pycocotools_does(
    target: tuple[Project, list[Image]], tmp_path: Path
) -> None:
    project, (small, large) = target
    polygon = [[2.0, 3.0, 30.5, 4.0, 20.0, 25.0], [33, 20, 39, 20, 39, 29, 33, 29]]
    binary = np.zeros((large.height, large.width), dtype=np.uint8)
    binary[10:20, 5:50] = 1
    # Uncompressed COCO RLE: run lengths over the column-major pixels, zeros first.
    flat = binary.ravel(order="F")
    edges = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
    uncompressed = {"size": [large.height, large.width], "counts": np.diff(edges).tolist()}
    assert flat[0] == 0  # else the counts would start with a 0-long run of zeros
    document = {
        "images": images_of([small, large]),
        "annotations": [
            {"id": 1, "image_id": 100, "segmentation": polygon, "category_id": 1},
            {"id": 2, "image_id": 101, "segmentation": uncompressed, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    summary = coco_import(project=project, path=write(tmp_path, document))
    assert (summary.masks, summary.categories) == (2, 1)
    drawn = Mask.objects.get(image=small)
    truth = mask_utils.decode(
        mask_utils.merge(mask_utils.frPyObjects(polygon, small.height, small.width))
    ).astype(bool)
    np.testing.assert_array_equal(pixels(drawn), truth)
    np.testing.assert_array_equal(pixels(Mask.objects.get(image=large)), binary.astype(bool))


def test_images_not_in_the_project_are_refused_or_skipped_on_request(
    target: tuple[Project, list[Image]], tmp_path: Path
) -> None:
    project, (small, _) = target
    stranger = {"id": 7, "file_name": "elsewhere.jpg", "width": 10, "height": 10}
    document = {
        "images": [*images_of([small]), stranger],
        "annotations": [
            {"id": 1, "image_id": 100, "segmentation": [[1, 1, 20, 1, 20, 20]]},
            {"id": 2, "image_id": 7, "segmentation": [[1, 1, 5, 1, 5, 5]]},
        ],
    }
    path = write(tmp_path, document)
    assert "no image of the project is named 'elsewhere.jpg'" in refused(project, path)
    summary = coco_import(project=project, path=path, skip_missing_images=True)
    assert (summary.masks, summary.skipped_images) == (1, ["elsewhere.jpg"])
    assert "1 images not in the project skipped" in summary.line


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xff\xfe not json", "not a JSON file"),
        (b"[1, 2]", "a JSON object with images and annotations"),
        (b'{"images": []}', "needs a list of annotations"),
    ],
)
def test_a_file_that_is_not_coco_is_refused(
    target: tuple[Project, list[Image]], tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert reason in refused(target[0], path)


def test_every_bad_annotation_is_listed_and_nothing_is_written(
    target: tuple[Project, list[Image]], tmp_path: Path
) -> None:
    project, (small, large) = target
    good = [[1, 1, 20, 1, 20, 20]]
    document = {
        "images": [
            *images_of([small, large]),
            {"id": 102, "file_name": small.file_name, "width": 99, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 100, "segmentation": good},  # fine, but not alone
            {"id": 1, "image_id": 100, "segmentation": good},
            {"id": 2, "image_id": 999, "segmentation": good},
            {"id": 3, "image_id": 100, "segmentation": {"size": [30, 40], "counts": "#$%"}},
            {"id": 4, "image_id": 101, "segmentation": {"size": [30, 40], "counts": "PP0"}},
            {"id": 5, "image_id": 100, "segmentation": [[1, 1, 2]]},
            {"id": 6, "image_id": 100, "segmentation": [[1, 1, 900, 1, 900, 9]]},
            {"id": 7, "image_id": 100, "segmentation": [[1, 1, float("nan"), 1, 5, 5]]},
            {"id": 8, "image_id": 100, "segmentation": [[30, 25, 30, 25, 30, 25]]},  # empty
            {"id": 9, "image_id": 100, "segmentation": "a string"},
            {"id": "10", "image_id": 100, "segmentation": good},
        ],
    }
    message = refused(project, write(tmp_path, document))
    assert message.startswith("11 problem(s) in coco.json, nothing imported")
    for expected in (
        "images[2] (photo_1.png): 30 x 99 in the file, 30 x 40 in the project",
        "(id 1): the id appears twice",
        "image_id 999 is not one of the file's images",
        "(id 3): rle counts '#$%' are not a COCO compressed RLE string",
        "(id 4): rle size [30, 40] does not match the image [height, width] = [48, 64]",
        "(id 5): each polygon must be a list of at least 3 x, y pairs",
        "(id 6): a polygon has points outside the 40 x 30 image",
        "(id 7): a polygon has a NaN or infinite coordinate",
        "(id 8): the mask is empty",
        "(id 9): segmentation must be an RLE object or a non-empty list of polygons",
        "annotations[10]: needs an integer id",
    ):
        assert expected in message, (expected, message)


def test_a_hostile_polygon_is_refused_before_rasterising(
    target: tuple[Project, list[Image]], tmp_path: Path
) -> None:
    """A zigzag of 100,000 full-width edges: pycocotools would walk billions of points."""
    project, (small, _) = target
    zigzag: list[float] = []
    for k in range(100_000):
        zigzag += [0.0 if k % 2 else 40.0, (k % 30) * 1.0]
    document = {
        "images": images_of([small]),
        "annotations": [{"id": 1, "image_id": 100, "segmentation": [zigzag]}],
    }
    assert "px long: not a mask outline" in refused(project, write(tmp_path, document))


def test_two_images_with_one_name_are_ambiguous(
    target: tuple[Project, list[Image]], tmp_path: Path
) -> None:
    project, (small, large) = target
    Image.objects.filter(pk=large.pk).update(file_name=small.file_name)
    document = {"images": images_of([small]), "annotations": []}
    assert f"2 images of the project are named {small.file_name!r}" in refused(
        project, write(tmp_path, document)
    )


def test_the_command_prints_a_summary_or_the_reasons(
    target: tuple[Project, list[Image]], tmp_path: Path
) -> None:
    project, (small, _) = target
    document = one_triangle(small)
    out = io.StringIO()
    path = write(tmp_path, document)
    call_command("import_coco", project.name, str(path), "--no-progress", stdout=out)
    assert "imported 1 masks onto 1 images, 0 already in the project (job " in out.getvalue()
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_coco", project.name, str(tmp_path / "missing.json"))
    with pytest.raises(CommandError, match="unknown project"):
        call_command("import_coco", "no such project", str(path))


def test_a_projects_own_export_imported_back_changes_nothing(tmp_path: Path) -> None:
    project = Project.objects.create(name="Round trip")
    rng = np.random.default_rng(5)
    image = add_image(project, 40, 30, 1)
    kept = mask_create(image=image, binary=ellipse(30, 40, rng), source="manual")
    rejected = mask_create(
        image=image, binary=ellipse(30, 40, rng), source="assisted", status="rejected"
    )
    export = coco_document(run_export(project, "coco", status="accepted"))
    export["annotations"].append({**export["annotations"][0], "id": 999})
    export["annotations"][-1]["segmentation"] = rejected.rle
    summary = coco_import(project=project, path=write(tmp_path, export))
    assert (summary.masks, summary.already) == (0, 2)
    assert set(Mask.objects.filter(project=project).values_list("pk", flat=True)) == {
        kept.pk, rejected.pk,
    }  # fmt: skip


def test_the_command_takes_an_import_back(
    target: tuple[Project, list[Image]], tmp_path: Path
) -> None:
    project, (small, _) = target
    document = one_triangle(small)
    summary = coco_import(project=project, path=write(tmp_path, document))
    out = io.StringIO()
    call_command("import_coco", project.name, "--undo", str(summary.job_id), stdout=out)
    assert f"deleted 1 masks of import job {summary.job_id}" in out.getvalue()
    assert not Mask.objects.filter(project=project).exists()
    with pytest.raises(CommandError, match="not both"):
        call_command("import_coco", project.name)
    with pytest.raises(CommandError, match="has no job #999999"):
        call_command("import_coco", project.name, "--undo", "999999")


def test_only_the_images_the_file_names_are_read(
    target: tuple[Project, list[Image]], tmp_path: Path
) -> None:
    """Finding a file's images reads the rows it names, not the whole project (millions)."""
    project, (small, _) = target
    document = {"images": images_of([small]), "annotations": []}
    with CaptureQueriesContext(connection) as queries:
        coco_import(project=project, path=write(tmp_path, document))
    reads = [q["sql"] for q in queries if 'FROM "annotation_image"' in q["sql"]]
    assert reads
    assert all('"file_name" IN' in sql or '"sha256" IN' in sql for sql in reads), reads
