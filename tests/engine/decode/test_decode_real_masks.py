"""The decode endpoint on a trained model's real masks: the boundary-only path is taken and
its RLE, PNG and refs equal `SamPredictor.predict` on the stored embedding."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PilImage

from annotation.models import Image, Project
from annotation.services.ingest import images_ingest_batch
from engine.models import ModelVersion
from engine.sam import boundary_masks
from engine.services.embeddings import embedding_compute
from tests.engine.decode.helpers import (
    decode,
    reference_predictor,
    register,
    rle_pixels,
)
from training.loop.scenes import generate_scene

SEED_CHECKPOINT = Path(__file__).parents[3] / "training" / "seed" / "seed_vit_tiny_domain_a.pth"


@pytest.fixture
def seed_version(cats: Project) -> ModelVersion:
    return register(cats, SEED_CHECKPOINT, name="seed")


@pytest.fixture
def scene(cats: Project, seed_version: ModelVersion) -> Image:
    """A 600 x 900 scene of the seed model's domain with its stored embedding."""
    out = io.BytesIO()
    PilImage.fromarray(generate_scene(11, "A", (600, 900)).image).save(out, "PNG")
    [outcome] = images_ingest_batch(project=cats, files=[("scene.png", out.getvalue())])
    assert outcome.image is not None
    embedding_compute(image_id=outcome.image.pk, model_version_id=seed_version.pk)
    return outcome.image


@pytest.mark.django_db
def test_decodes_of_real_masks_take_the_boundary_path_and_equal_predict(
    scene, seed_version, annotator_user, monkeypatch
):
    plans: list[bool] = []
    original = boundary_masks.BoundaryMasks.plan

    def spied(self, low_res):
        plan = original(self, low_res)
        plans.append(plan is not None)
        return plan

    monkeypatch.setattr(boundary_masks.BoundaryMasks, "plan", spied)
    predictor = reference_predictor(scene, seed_version)
    points: list[list[float]] = []
    labels: list[int] = []
    mask_ref = None
    previous = None
    for x, y, label in [(450.0, 300.0, 1), (200.0, 150.0, 1), (600.0, 420.0, 0)]:
        points.append([x, y])
        labels.append(label)
        for output_format in ("rle", "png"):
            result = decode(
                annotator_user,
                scene,
                model_version_id=seed_version.pk,
                points=points,
                labels=labels,
                mask_ref=mask_ref,
                output_format=output_format,
            )
            masks, scores, low_res = predictor.predict(
                np.array(points), np.array(labels), mask_input=previous,
                multimask_output=len(points) == 1,
            )  # fmt: skip
            assert len(result.masks) == len(masks)
            for answer, mask, score in zip(result.masks, masks, scores, strict=True):
                if output_format == "rle":
                    assert answer.rle is not None
                    assert np.array_equal(rle_pixels(answer.rle), mask)
                else:
                    assert answer.png is not None
                    png = PilImage.open(io.BytesIO(base64.b64decode(answer.png)))
                    assert np.array_equal(np.asarray(png).astype(bool), mask)
                assert answer.score == pytest.approx(float(score), abs=0)
        best = int(np.argmax(scores))
        mask_ref = result.masks[best].mask_ref
        # A mask_ref keeps the logits as float16: the reference gets the same values.
        previous = low_res[best][None].astype(np.float16).astype(np.float32)
    assert plans.count(True) >= 4  # most of the six decodes went the boundary way
