"""One project through the three stages of the data engine, driven as an admin drives it.

Every step an admin takes is a ``manage.py`` command in a child process on the test's
committed PostgreSQL database, blob folder and Redis broker; the annotator works through the
REST API; a real ``gpu``-queue Celery worker computes the embeddings, the prefill run and the
automatic run. The steps:

1. ``create_project``, ``add_member``, ``import_images``, ``import_checkpoint --deploy`` (the
   tiny golden model; the worker embeds every image);
2. assisted-manual: the annotator takes the next image, decodes a click against its
   embedding, accepts the mask and marks the image done;
3. ``set_stage semi_automatic``: a prefill run proposes masks on the todo images; the
   annotator rejects one and marks the image done, which accepts the rest;
4. ``set_stage fully_automatic``, ``run_automatic``: every image gets the run's masks;
5. ``export_dataset --format sa1b --job RUN``: the shards hold exactly the run's masks, and
   every annotation decodes with pycocotools to the stored mask.
"""

import json
import re
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count
from pycocotools import mask as mask_utils
from rest_framework.test import APIClient

from annotation.models import Image, Mask, Project, Stage
from engine.models import Job
from tests.engine.automatic_helpers import FAST
from tests.engine.conftest import GOLDEN_CHECKPOINT
from tests.factories import client_for, manage_in_child, png
from tests.workers import celery_worker, wait_or_fail

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PROJECT = "three stages"
SIZES = [(96, 72), (80, 64), (72, 96)]  # (width, height)
WAIT_S = 240
# The automatic run's settings on the command line: FAST (a 4 x 4 grid, every candidate kept),
# so that the tiny random-weight model gives a few masks per image in about a second.
RUN_SETTINGS = [
    f"{key}={'none' if value is None else json.dumps(value)}" for key, value in FAST.items()
]


def _manage(*args: str) -> str:
    """Run a management command as an admin would; its stdout, or the test fails with its
    output."""
    env = {
        "STORAGE_BACKEND": "local",
        "BLOB_ROOT": str(settings.BLOB_ROOT),
        "MASKLOOP_VAR_DIR": str(settings.VAR_DIR),
    }
    done: subprocess.CompletedProcess[str] = manage_in_child(*args, env=env)
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _job_id(pattern: str, output: str) -> int:
    found = re.search(pattern, output)
    assert found is not None, output
    return int(found.group(1))


def _finished(job_id: int) -> Callable[[], bool]:
    return lambda: Job.objects.get(pk=job_id).is_finished


def _assisted_accept(bob: APIClient, image: Image, log: Path) -> Mask:
    """A click in the image's middle, decoded against its embedding once the worker stored it;
    the best candidate accepted as an assisted mask."""
    body = {"points": [[image.width / 2, image.height / 2]], "labels": [1]}
    answers: list[Any] = []

    def decoded() -> bool:
        response = bob.post(f"/api/images/{image.pk}/decode/", body, format="json")
        if response.status_code == 409 and response.data["code"] == "embedding_not_ready":
            return False
        assert response.status_code == 200, response.data
        answers.append(response.data)
        return True

    wait_or_fail(decoded, WAIT_S, "the image's embedding was not ready", log)
    best = max(answers[0]["masks"], key=lambda candidate: candidate["score"])
    response = bob.post(
        f"/api/images/{image.pk}/masks/",
        {
            "rle": best["rle"],
            "source": "assisted",
            "model_version": answers[0]["model_version"],
            "prompts": body,
            "clicks": 1,
            "seconds_spent": 4.2,
        },
        format="json",
    )
    assert response.status_code == 201, response.data
    return Mask.objects.get(pk=response.data["id"])


def _next_image(bob: APIClient, project: Project) -> Image:
    response = bob.post(f"/api/projects/{project.pk}/next-image/", {}, format="json")
    assert response.status_code == 200, response.data
    return Image.objects.get(pk=response.data["image"]["id"])


def _mark_done(bob: APIClient, image: Image) -> None:
    response = bob.post(f"/api/images/{image.pk}/done/")
    assert response.status_code == 200, response.data


def _shard_documents(folder: Path) -> dict[str, dict[str, Any]]:
    documents = {}
    for shard in sorted(folder.glob("sa_*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    documents[member.name] = json.load(extracted)
    return documents


def test_a_project_goes_through_all_three_stages_by_cli(redis_broker: redis.Redis, tmp_path):
    User.objects.create_user("alice", password="alice-pass-123")
    bob_user = User.objects.create_user("bob", password="bob-pass-123")
    bob = client_for(bob_user)
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed, (width, height) in enumerate(SIZES):
        (folder / f"photo_{seed}.png").write_bytes(png(seed, width, height))

    _manage("create_project", PROJECT, "--admin", "alice")
    _manage("add_member", PROJECT, "bob", "--role", "annotator")
    assert "imported 3" in _manage("import_images", PROJECT, str(folder), "--no-progress")
    project = Project.objects.get(name=PROJECT)
    log = tmp_path / "gpu-worker.log"
    with celery_worker(
        queue="gpu", log=log, extra_env={"MASKLOOP_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    ):
        _manage("import_checkpoint", PROJECT, str(GOLDEN_CHECKPOINT), "--deploy")
        project.refresh_from_db()
        version = project.deployed_version
        assert version is not None

        # 1. Assisted-manual: one mask accepted with the model's help, the image done.
        first = _next_image(bob, project)
        assisted = _assisted_accept(bob, first, log)
        assert (assisted.stage, assisted.source, assisted.model_version_id) == (
            Stage.ASSISTED_MANUAL,
            "assisted",
            version.pk,
        )
        _mark_done(bob, first)

        # 2. Semi-automatic: prefill proposes masks on the two todo images.
        alice = client_for(User.objects.get(username="alice"))
        response = alice.put(
            f"/api/projects/{project.pk}/prefill-settings/", {"settings": FAST}, format="json"
        )
        assert response.status_code == 200, response.data
        output = _manage("set_stage", PROJECT, "semi_automatic", "--user", "alice")
        prefill_id = _job_id(r"prefill run queued: job #(\d+)", output)
        wait_or_fail(_finished(prefill_id), WAIT_S, "the prefill run did not finish", log)
        prefill = Job.objects.get(pk=prefill_id)
        assert (prefill.kind, prefill.status) == ("prefill", "succeeded"), prefill.error
        todo = set(project.images.exclude(pk=first.pk).values_list("pk", flat=True))
        proposed = Mask.objects.filter(job=prefill, status="proposed", source="prefill")
        assert set(proposed.values_list("image_id", flat=True)) == todo
        assert not Mask.objects.filter(job=prefill, image=first).exists()

        second = _next_image(bob, project)
        assert second.pk in todo
        wrong, *kept = Mask.objects.filter(job=prefill, image=second).order_by("id")
        response = bob.post(f"/api/masks/{wrong.pk}/prefill-reject/")
        assert response.status_code == 200, response.data
        _mark_done(bob, second)
        statuses = dict(Mask.objects.filter(job=prefill, image=second).values_list("id", "status"))
        assert statuses == {wrong.pk: "rejected", **{mask.pk: "accepted" for mask in kept}}

        # 3. Fully automatic: a run over every image, by the worker.
        _manage("set_stage", PROJECT, "fully_automatic", "--user", "alice")
        args = [arg for setting in RUN_SETTINGS for arg in ("--set", setting)]
        run_id = _job_id(r"run (\d+) \(automatic\)", _manage("run_automatic", PROJECT, *args))
        wait_or_fail(_finished(run_id), WAIT_S, "the automatic run did not finish", log)
    run = Job.objects.get(pk=run_id)
    assert run.status == Job.Status.SUCCEEDED, run.error
    images = list(project.images.order_by("id"))
    run_masks = {mask.pk: mask for mask in Mask.objects.filter(job=run).select_related("image")}
    assert {mask.image_id for mask in run_masks.values()} == {image.pk for image in images}
    for mask in run_masks.values():
        assert (mask.stage, mask.source, mask.status) == (
            "fully_automatic",
            "automatic",
            "accepted",
        )
        assert mask.model_version_id == version.pk
    project.refresh_from_db()
    assert project.stage == Stage.FULLY_AUTOMATIC

    # 4. The SA-1B export of the run, loaded with pycocotools.
    out = tmp_path / "sa1b"
    output = _manage(
        "export_dataset",
        PROJECT,
        "--format",
        "sa1b",
        "--job",
        str(run_id),
        "--out",
        str(out),
        "--no-progress",
    )
    assert f"exported {len(run_masks)} masks of {len(images)} images as sa1b" in output
    documents = _shard_documents(out)
    assert sorted(documents) == sorted(f"sa_{image.pk}.json" for image in images)
    exported: set[int] = set()
    for image in images:
        document = documents[f"sa_{image.pk}.json"]
        assert document["image"]["width"] == image.width
        assert document["image"]["height"] == image.height
        for ann in document["annotations"]:
            stored = run_masks[ann["id"]]
            assert stored.image_id == image.pk
            rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"]}
            pixels = mask_utils.decode({**rle, "counts": rle["counts"].encode()})
            assert pixels.shape == (image.height, image.width)
            stored_rle = {"size": [image.height, image.width], "counts": stored.rle_counts.encode()}
            assert np.array_equal(pixels, mask_utils.decode(stored_rle))
            assert ann["area"] == int(pixels.sum()) == stored.area
            assert ann["predicted_iou"] == pytest.approx(stored.predicted_iou)
            assert ann["stability_score"] == pytest.approx(stored.stability_score)
            assert ann["crop_box"] == stored.crop_box
            assert ann["point_coords"] == stored.point_coords
            exported.add(ann["id"])
    assert exported == set(run_masks)
    # The earlier stages' masks are all still there, each with its own provenance.
    accepted = (
        Mask.objects.filter(project=project, status="accepted")
        .values("source")
        .annotate(n=Count("id"))
    )
    by_source = {row["source"]: row["n"] for row in accepted}
    expected = {"assisted": 1, "prefill": len(kept), "automatic": len(run_masks)}
    assert by_source == {source: n for source, n in expected.items() if n}
