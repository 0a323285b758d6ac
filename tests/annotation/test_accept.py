"""Accepting a mask in the tool: provenance and timing, RLE or PNG, idempotency, the lease
rule, bad input, concurrency, deleting a mask."""

import datetime as dt
import uuid
from functools import partial

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from annotation.models import ImageLease, Mask, Project, Stage
from annotation.services.leases import image_lease_take
from annotation.services.masks import mask_accept
from annotation.services.projects import project_create
from engine.models import ModelVersion
from tests.annotation.workflow import (
    decoded,
    make_images,
    member,
    png_of,
    rle_of,
    run_together,
    square,
)
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def _version(project: Project, tag: str = "a") -> ModelVersion:
    return ModelVersion.objects.create(
        project=project, name=f"v-{tag}", arch="vit_b", checkpoint_key="models/x", sha256=tag * 64
    )


def _accept(user: User, image_id: int, **body):
    payload = {"rle": rle_of(square()), "source": "assisted", **body}
    return client_for(user).post(f"/api/images/{image_id}/masks/", payload, format="json")


def test_accept_stores_the_mask_with_its_provenance_and_timing(project, annotator_user):
    project.stage = Stage.SEMI_AUTOMATIC
    project.save()
    (image,) = make_images(project, 1)
    version = _version(project)
    prompts = {"points": [[12.5, 8.0], [20, 10]], "labels": [1, 0], "box": None, "history": []}
    response = _accept(
        annotator_user,
        image.pk,
        model_version=version.pk,
        prompts=prompts,
        clicks=3,
        brush_strokes=2,
        seconds_spent=14.25,
        idempotency_key="k-1",
    )
    assert response.status_code == 201
    mask = Mask.objects.get()
    assert response.data["id"] == mask.pk
    assert (mask.stage, mask.source, mask.status) == ("semi_automatic", "assisted", "accepted")
    assert (mask.model_version, mask.annotator) == (version, annotator_user)
    assert (mask.prompts, mask.clicks, mask.brush_strokes) == (prompts, 3, 2)
    assert mask.seconds_spent == 14.25
    assert mask.project == project
    assert np.array_equal(decoded(mask.rle_counts), square())
    assert (mask.area, mask.bbox) == (200, [10, 5, 20, 10])
    assert response.data["brush_strokes"] == 2
    assert response.data["segmentation"] == {"size": [30, 40], "counts": mask.rle_counts}
    listed = client_for(annotator_user).get(f"/api/images/{image.pk}/masks/")
    assert [row["id"] for row in listed.data["results"]] == [mask.pk]


@pytest.mark.parametrize("mode", ["1", "L"])
def test_a_png_mask_is_stored_pixel_for_pixel(project, annotator_user, mode):
    (image,) = make_images(project, 1)
    pixels = square(0, 30, 0, 7)
    response = client_for(annotator_user).post(
        f"/api/images/{image.pk}/masks/",
        {"png": png_of(pixels, mode=mode), "source": "manual"},
        format="json",
    )
    assert response.status_code == 201
    mask = Mask.objects.get()
    assert mask.source == "manual"
    assert mask.model_version is None
    assert np.array_equal(decoded(mask.rle_counts), pixels)


def test_accepting_the_same_mask_twice_stores_one_row(project, annotator_user):
    (image,) = make_images(project, 1)
    first = _accept(annotator_user, image.pk, idempotency_key="same", seconds_spent=3.0)
    again = _accept(annotator_user, image.pk, idempotency_key="same", seconds_spent=99.0)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.data["id"] == again.data["id"]
    assert Mask.objects.count() == 1
    assert Mask.objects.get().seconds_spent == 3.0


def test_another_annotators_idempotency_key_is_a_conflict(project, annotator_user):
    (image,) = make_images(project, 1)
    carol = member(project, "carol", "annotator")
    _accept(annotator_user, image.pk, idempotency_key="shared")
    response = _accept(carol, image.pk, idempotency_key="shared")
    assert response.status_code == 409
    assert response.data["code"] == "conflict"
    assert Mask.objects.count() == 1


def test_accept_renews_the_callers_unexpired_lease(project, annotator_user):
    (image,) = make_images(project, 1)
    lease = image_lease_take(image=image, user=annotator_user)
    ImageLease.objects.update(expires_at=timezone.now() + dt.timedelta(seconds=5))
    assert _accept(annotator_user, image.pk).status_code == 201
    lease.refresh_from_db()
    assert (lease.expires_at - timezone.now()).total_seconds() > 590


def test_an_expired_lease_nobody_took_is_silently_renewed(project, annotator_user):
    (image,) = make_images(project, 1)
    lease = image_lease_take(image=image, user=annotator_user)
    ImageLease.objects.update(expires_at=timezone.now() - dt.timedelta(minutes=5))
    assert _accept(annotator_user, image.pk).status_code == 201
    lease.refresh_from_db()
    assert lease.expires_at > timezone.now()
    assert Mask.objects.count() == 1


def test_an_expired_lease_another_annotator_took_is_409_and_stores_nothing(project, annotator_user):
    (image,) = make_images(project, 1)
    carol = member(project, "carol", "annotator")
    image_lease_take(image=image, user=annotator_user)
    ImageLease.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    carols = image_lease_take(image=image, user=carol)
    response = _accept(annotator_user, image.pk, idempotency_key="late")
    assert response.status_code == 409
    assert response.data["code"] == "lease_expired"
    assert "carol" in response.data["detail"]
    assert not Mask.objects.exists()
    assert ImageLease.objects.get(expires_at__gt=timezone.now()).pk == carols.pk
    bobs = ImageLease.objects.get(user=annotator_user)
    assert bobs.expires_at < timezone.now()


MALFORMED = [
    pytest.param({"rle": {"size": [30, 40], "counts": "not rle!"}}, id="garbage-counts"),
    pytest.param({"rle": {"size": [31, 40], "counts": rle_of(square())["counts"]}}, id="size"),
    pytest.param({"rle": {"counts": rle_of(square())["counts"]}}, id="no-size"),
    pytest.param({"rle": "abc"}, id="rle-not-a-dict"),
    pytest.param({"rle": rle_of(np.zeros((30, 40), dtype=bool))}, id="empty"),
    pytest.param({"rle": None, "png": "%%%not base64"}, id="png-not-base64"),
    pytest.param({"rle": None, "png": "aGVsbG8="}, id="png-not-a-png"),
    pytest.param({"rle": None, "png": png_of(np.ones((10, 10), dtype=bool))}, id="png-size"),
    pytest.param({"rle": None}, id="no-mask"),
    pytest.param({"png": png_of(square())}, id="rle-and-png"),
]


@pytest.mark.parametrize("body", MALFORMED)
def test_a_malformed_mask_is_400_invalid_mask_and_changes_nothing(project, annotator_user, body):
    (image,) = make_images(project, 1)
    image_lease_take(image=image, user=annotator_user)
    expired = timezone.now() - dt.timedelta(seconds=1)
    ImageLease.objects.update(expires_at=expired)
    response = _accept(annotator_user, image.pk, **body)
    assert response.status_code == 400
    assert response.data["code"] == "invalid_mask"
    assert response.data["detail"]
    assert not Mask.objects.exists()
    assert ImageLease.objects.get().expires_at == expired  # the lease was not renewed


def test_an_rgb_png_is_refused(project, annotator_user):
    import base64
    import io

    from PIL import Image as PilImage

    (image,) = make_images(project, 1)
    out = io.BytesIO()
    PilImage.new("RGB", (40, 30), (255, 255, 255)).save(out, "PNG")
    response = _accept(annotator_user, image.pk, rle=None, png=base64.b64encode(out.getvalue()))
    assert response.status_code == 400
    assert "greyscale" in response.data["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"seconds_spent": -1}, "seconds_spent"),
        ({"seconds_spent": 86401}, "seconds_spent"),
        ({"clicks": -2}, "clicks"),
        ({"clicks": 10**20}, "clicks"),
        ({"brush_strokes": "many"}, "brush_strokes"),
        ({"brush_strokes": 10**12}, "brush_strokes"),
        ({"source": "automatic"}, "source"),
        ({"idempotency_key": "k" * 101}, "idempotency_key"),
    ],
)
def test_out_of_range_fields_are_400_and_store_nothing(project, annotator_user, body, field):
    (image,) = make_images(project, 1)
    response = _accept(annotator_user, image.pk, **body)
    assert response.status_code == 400
    # One code per field, whichever way it is out of range (as docs/api.md says).
    assert response.data["code"] == "invalid"
    assert response.data["detail"].startswith(f"{field}: ")
    assert not Mask.objects.exists()


def test_non_finite_seconds_are_refused_by_the_service(project, annotator_user):
    (image,) = make_images(project, 1)
    with pytest.raises(Exception, match="seconds_spent must be finite"):
        mask_accept(
            image=image,
            annotator=annotator_user,
            rle=rle_of(square()),
            source="assisted",
            seconds_spent=float("nan"),
        )
    assert not Mask.objects.exists()


def test_a_model_version_of_another_project_is_400(project, admin_user, annotator_user):
    (image,) = make_images(project, 1)
    dogs = project_create(name="dogs", creator=admin_user)
    response = _accept(annotator_user, image.pk, model_version=_version(dogs).pk)
    assert response.status_code == 400
    assert response.data["code"] == "invalid_mask"
    assert not Mask.objects.exists()


def test_a_model_version_deleted_while_working_keeps_the_mask_without_a_version(
    project, annotator_user
):
    (image,) = make_images(project, 1)
    version = _version(project)
    gone = version.pk
    version.delete()
    response = _accept(annotator_user, image.pk, model_version=gone)
    assert response.status_code == 201
    assert response.data["model_version"] is None
    assert Mask.objects.get().model_version is None


def test_accepting_on_an_image_of_another_project_is_404(project, admin_user, annotator_user):
    dogs = project_create(name="dogs", creator=admin_user)
    (image,) = make_images(dogs, 1)
    response = _accept(annotator_user, image.pk)
    assert response.status_code == 404
    assert not Mask.objects.exists()


def test_an_annotator_deletes_their_own_mask_but_not_anothers(project, annotator_user):
    (image,) = make_images(project, 1)
    carol = member(project, "carol", "annotator")
    own = _accept(annotator_user, image.pk).data["id"]
    carols = _accept(carol, image.pk, rle=rle_of(square(0, 3))).data["id"]
    refused = client_for(annotator_user).delete(f"/api/masks/{carols}/")
    assert refused.status_code == 403
    assert refused.data["code"] == "permission_denied"
    assert client_for(annotator_user).delete(f"/api/masks/{own}/").status_code == 204
    assert list(Mask.objects.values_list("id", flat=True)) == [carols]


def test_a_reviewer_deletes_any_mask_and_an_outsider_gets_404(
    project, annotator_user, outsider_user
):
    (image,) = make_images(project, 1)
    reviewer = member(project, "rita", "reviewer")
    mask_id = _accept(annotator_user, image.pk).data["id"]
    assert client_for(outsider_user).delete(f"/api/masks/{mask_id}/").status_code == 404
    assert client_for(reviewer).delete(f"/api/masks/{mask_id}/").status_code == 204
    assert not Mask.objects.exists()


def test_next_image_shows_the_accepted_masks_of_the_image(project, annotator_user):
    (image,) = make_images(project, 1)
    mask_id = _accept(annotator_user, image.pk).data["id"]
    response = client_for(annotator_user).post(f"/api/projects/{project.pk}/next-image/")
    assert [m["id"] for m in response.data["image"]["masks"]] == [mask_id]


# --- concurrency: real threads, each with its own PostgreSQL connection ----------------------


@pytest.fixture
def committed_project() -> tuple[Project, User, User]:
    admin = User.objects.create_user("alice")
    project = project_create(name="race", creator=admin)
    return project, member(project, "bob", "annotator"), member(project, "carol", "annotator")


@pytest.mark.django_db(transaction=True)
def test_two_annotators_accepting_on_one_image_at_once_are_both_kept(committed_project):
    project, bob, carol = committed_project
    (image,) = make_images(project, 1)
    image_lease_take(image=image, user=bob)  # bob holds it; carol helps without a lease
    for round_ in range(5):
        bodies = [
            (bob, {"rle": rle_of(square(0, 10)), "idempotency_key": f"b{round_}"}),
            (carol, {"rle": rle_of(square(20, 30)), "idempotency_key": f"c{round_}"}),
        ]
        responses = run_together(
            [partial(_accept, user, image.pk, **body) for user, body in bodies]
        )
        assert [response.status_code for response in responses] == [201, 201]
    assert Mask.objects.filter(annotator=bob).count() == 5
    assert Mask.objects.filter(annotator=carol).count() == 5


@pytest.mark.django_db(transaction=True)
def test_the_same_accept_sent_twice_at_once_stores_one_row(committed_project):
    project, bob, _ = committed_project
    (image,) = make_images(project, 1)
    for _ in range(5):
        key = uuid.uuid4().hex
        responses = run_together(
            [partial(_accept, bob, image.pk, idempotency_key=key) for _ in range(4)]
        )
        assert sorted(r.status_code for r in responses) == [200, 200, 200, 201]
        assert len({r.data["id"] for r in responses}) == 1
        assert Mask.objects.filter(idempotency_key=key).count() == 1
