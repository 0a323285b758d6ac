"""The semi-automatic stage: confident masks prefilled by the deployed model, the rest by people.

- :data:`PREFILL_DEFAULTS`: the generator's settings for prefill, strict so that a prefilled mask
  is rarely wrong (chosen with ``bench/prefill_precision.py``, see docs/admin-guide.md); a project
  overrides any of them in ``Project.prefill_settings`` (:func:`prefill_settings_set`);
- :func:`prefill_start`: a prefill run (``engine.services.automatic``, mode ``prefill``) over the
  project's todo images that have not been prefilled yet; its masks are stored ``proposed`` with
  source ``prefill``, stage ``semi_automatic``;
- in the tool, an annotator rejects a wrong prefilled mask (:func:`prefill_mask_reject`, undone
  by :func:`prefill_mask_restore`) and adds the missing objects as usual; marking the image done
  accepts the prefilled masks still proposed (:func:`prefill_accept_for_image`, called by
  ``image_mark_done``): the annotator has seen them and left them in. Rejected prefill masks stay
  ``rejected`` and so never reach a training snapshot or an export (both read accepted masks);
- :func:`prefill_calibrate`: the precision and recall that prefill would have on the project's
  frozen validation split, against the masks annotators accepted there (read-only).
"""

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from annotation.errors import DomainError
from annotation.ids import id_in_range
from annotation.imaging import load_rgb_array
from annotation.models import Image, Mask, Project, Stage
from annotation.permissions import ADMIN, ANNOTATOR, has_role
from annotation.services.categories import mask_category
from annotation.services.leases import lease_check_holder
from annotation.services.prefill_calibration import MatchCounts, rle_iou
from engine.models import AutomaticImage, Job
from engine.services.automatic import PREFILL, automatic_start
from engine.services.automatic.params import check_overrides, resolve_settings
from storage.blobs import get_blob_store

AnyUser = User | AbstractBaseUser | AnonymousUser

# Thresholds chosen with bench/prefill_precision.py for the seed model (8 held-out domain-A
# scenes, 32 x 32 grid): the highest recall@0.5 among the grid points with precision@0.75 >= 0.9
# was pred_iou_thresh 0.80 / stability_score_thresh 0.80 (end to end: 1.1 masks per image, every
# one matching an object at IoU >= 0.75, recall 0.085). The seed model scores its masks low: at
# the official 0.88 / 0.95 it proposes nothing. Stronger models (official checkpoints) score
# higher, so calibrate a real project with `manage.py prefill_calibrate` and store its own
# thresholds (docs/admin-guide.md, "Semi-automatic"). The rest is the SA-1B clean-up: no region
# or hole under 100 px, no mask covering 95% of the image.
PREFILL_DEFAULTS: dict[str, Any] = {
    "points_per_side": 32,
    "pred_iou_thresh": 0.80,
    "stability_score_thresh": 0.80,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "min_mask_region_area": 100,
    "max_mask_area_fraction": 0.95,
}

REJECTED_IN_TOOL = "prefilled mask rejected by the annotator in the tool"


class PrefillRefused(DomainError):
    """A prefill action that does not apply (wrong stage, not a prefilled mask, nothing to do)."""

    code = "prefill_refused"


# --- settings --------------------------------------------------------------------------------


def prefill_settings_resolved(*, project: Project) -> dict[str, Any]:
    """The complete generator settings a prefill run of ``project`` would use now."""
    return resolve_settings(
        mode=PREFILL, project_settings=project.prefill_settings, params=PREFILL_DEFAULTS
    )


@transaction.atomic
def prefill_settings_set(
    *, project: Project, settings: Mapping[str, Any], user: AnyUser
) -> Project:
    """Store the project's prefill overrides (admins); ``{}`` goes back to the defaults.

    Checked as a run would check them (unknown key, out-of-range value: InvalidAutomaticSettings,
    400, nothing saved). Runs already started keep the settings they started with.
    """
    if not has_role(user=user, project=project, role=ADMIN):
        raise PermissionDenied("only project admins change the prefill settings")
    overrides = check_overrides(settings, what="prefill_settings")
    resolve_settings(mode=PREFILL, project_settings=overrides, params=PREFILL_DEFAULTS)
    project.prefill_settings = overrides
    project.save(update_fields=["prefill_settings"])
    return project


# --- runs ------------------------------------------------------------------------------------


def prefill_todo_image_ids(*, project: Project) -> list[int]:
    """Todo images of ``project`` that no prefill run has done or is still working on.

    An image counts as covered when a prefill run finished it (its ``AutomaticImage`` row is
    done) or a prefill run that has not finished holds it; images of a cancelled or failed run
    that it never reached come back.
    """
    covered = AutomaticImage.objects.filter(
        image=OuterRef("pk"), job__kind=Job.Kind.PREFILL
    ).filter(Q(status=AutomaticImage.Status.DONE) | ~Q(job__status__in=Job.FINISHED))
    return list(
        Image.objects.filter(project=project, status=Image.Status.TODO)
        .exclude(Exists(covered))
        .order_by("id")
        .values_list("id", flat=True)
    )


@transaction.atomic
def prefill_start(
    *, project: Project, user: User | None, image_ids: Sequence[int] | None = None
) -> Job:
    """Start a prefill run with the deployed model over ``image_ids`` (None: the todo images not
    prefilled yet, :func:`prefill_todo_image_ids`); returns its Job (kind ``prefill``).

    Refused (nothing written) with :class:`PrefillRefused` when the project is not
    semi-automatic, an id is not an image of the project, an image is done or there is
    nothing to prefill; with the run's own AutomaticRefused / InvalidAutomaticSettings when the
    project has no deployed model version or its prefill settings are bad.
    """
    if project.stage != Stage.SEMI_AUTOMATIC:
        raise PrefillRefused(
            f"project {project.name!r} is {project.get_stage_display()}; prefill runs only in the "
            "semi-automatic stage"
        )
    ids = list(image_ids) if image_ids is not None else prefill_todo_image_ids(project=project)
    if image_ids is not None:
        # Checked here, not left to the run's own check, so the refusal is a prefill's.
        in_range = [i for i in ids if id_in_range(i)]  # others are no image (would overflow)
        found = Image.objects.filter(project=project, pk__in=in_range).values_list("id", flat=True)
        missing = sorted(set(ids) - set(found))
        if missing:
            shown = ", ".join(map(str, missing[:20]))
            raise PrefillRefused(f"no images {shown} in project {project.name!r}")
    done = list(
        Image.objects.filter(project=project, pk__in=ids, status=Image.Status.DONE)
        .order_by("id")
        .values_list("id", flat=True)[:20]
    )
    if done:
        # Their prefilled masks would stay proposed: nobody marks a done image done again.
        raise PrefillRefused(
            f"images {', '.join(map(str, done))} are done already; prefill only todo images"
        )
    if not ids:
        raise PrefillRefused(f"every todo image of {project.name!r} is prefilled already")
    return automatic_start(
        project=project,
        user=user,
        mode=PREFILL,
        params=dict(PREFILL_DEFAULTS),
        image_ids=ids,
    )


# --- the tool --------------------------------------------------------------------------------


def _prefilled(mask: Mask) -> None:
    if mask.source != Mask.Source.PREFILL:
        raise PrefillRefused(
            f"mask #{mask.pk} is a {mask.source} mask; only prefilled masks are rejected here "
            "(delete your own masks instead)"
        )


def _check_annotator(*, mask: Mask, user: AnyUser, now: dt.datetime) -> None:
    if not has_role(user=user, project=mask.project, role=ANNOTATOR):
        raise PermissionDenied("only annotators of the project review prefilled masks")
    if mask.image.status == Image.Status.DONE:
        raise PrefillRefused(
            f"image #{mask.image_id} is done; its masks are changed in the review queue now"
        )
    if isinstance(user, User):
        lease_check_holder(image=mask.image, user=user, now=now)


@transaction.atomic
def prefill_mask_reject(*, mask: Mask, user: AnyUser, now: dt.datetime | None = None) -> Mask:
    """An annotator rejects a wrong prefilled mask of an image they are working on.

    The mask stays in the table as ``rejected`` (who and when in ``reviewed_by``/``reviewed_at``),
    out of training and exports. Rejecting it again returns it unchanged. Refused with
    PrefillRefused for a mask that is not prefilled or not proposed, or on a done image;
    LeaseTaken when another annotator holds the image.
    """
    now = now or timezone.now()
    locked = Mask.objects.select_for_update().select_related("image", "project").get(pk=mask.pk)
    _prefilled(locked)
    _check_annotator(mask=locked, user=user, now=now)
    if locked.status == Mask.Status.REJECTED:
        return locked
    if locked.status != Mask.Status.PROPOSED:
        raise PrefillRefused(f"mask #{locked.pk} is {locked.status}, not proposed")
    locked.status = Mask.Status.REJECTED
    locked.reviewed_by = user if isinstance(user, User) else None
    locked.reviewed_at = now
    locked.rejection_reason = REJECTED_IN_TOOL
    locked.save(
        update_fields=["status", "reviewed_by", "reviewed_at", "rejection_reason", "updated_at"]
    )
    return locked


@transaction.atomic
def prefill_mask_restore(*, mask: Mask, user: AnyUser, now: dt.datetime | None = None) -> Mask:
    """Undo :func:`prefill_mask_reject`: the mask is proposed again (same rules)."""
    now = now or timezone.now()
    locked = Mask.objects.select_for_update().select_related("image", "project").get(pk=mask.pk)
    _prefilled(locked)
    _check_annotator(mask=locked, user=user, now=now)
    if locked.status == Mask.Status.PROPOSED:
        return locked
    if locked.status != Mask.Status.REJECTED or locked.rejection_reason != REJECTED_IN_TOOL:
        raise PrefillRefused(f"mask #{locked.pk} was not rejected in the tool")
    locked.status = Mask.Status.PROPOSED
    locked.reviewed_by = None
    locked.reviewed_at = None
    locked.rejection_reason = ""
    locked.save(
        update_fields=["status", "reviewed_by", "reviewed_at", "rejection_reason", "updated_at"]
    )
    return locked


@transaction.atomic
def prefill_mask_relabel(
    *, mask: Mask, user: AnyUser, category_id: int | None, now: dt.datetime | None = None
) -> Mask:
    """An annotator gives a proposed prefilled mask a category (or takes it off) before the
    image is done: the model's mask stays proposed and unedited, with the label it will be
    accepted with. Same rules as :func:`prefill_mask_reject`; InvalidCategory for a category
    that is not the project's."""
    now = now or timezone.now()
    locked = Mask.objects.select_for_update().select_related("image", "project").get(pk=mask.pk)
    _prefilled(locked)
    _check_annotator(mask=locked, user=user, now=now)
    if locked.status != Mask.Status.PROPOSED:
        raise PrefillRefused(f"mask #{locked.pk} is {locked.status}, not proposed")
    locked.category = mask_category(project_id=locked.project_id, category_id=category_id)
    locked.save(update_fields=["category", "updated_at"])
    return locked


def prefill_accept_for_image(*, image: Image) -> int:
    """Accept the prefilled masks of ``image`` still proposed (the image was marked done by an
    annotator who saw them and kept them); returns how many. Runs in the caller's transaction."""
    return Mask.objects.filter(
        image=image, source=Mask.Source.PREFILL, status=Mask.Status.PROPOSED
    ).update(status=Mask.Status.ACCEPTED, updated_at=timezone.now())


# --- calibration on the validation split -------------------------------------------------------

PEOPLE_SOURCES = (Mask.Source.MANUAL, Mask.Source.ASSISTED)


def prefill_calibrate(
    *,
    project: Project,
    overrides: Mapping[str, Any] | None = None,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Run prefill (the deployed model, the project's prefill settings plus ``overrides``) on
    the project's frozen validation split and match its masks against the masks annotators
    accepted there (manual or assisted; prefilled or automatic ones are not ground truth).

    Returns the settings, the model version and the figures of
    :meth:`MatchCounts.summary` (precision and recall at IoU 0.5 and 0.75) plus
    ``images_without_masks`` (validation images nobody annotated: skipped). Writes nothing.
    PrefillRefused without a validation split or a deployed model version;
    InvalidAutomaticSettings for bad overrides.
    """
    # Imported here: the training app's models, and the model cache (torch), only when used.
    from engine.inference import model_for_version
    from engine.sam.amg import SamAutomaticMaskGenerator
    from training.selectors import validation_split_get

    split = validation_split_get(project=project)
    if split is None or not split.image_ids:
        raise PrefillRefused(
            f"project {project.name!r} has no validation split yet: it is frozen by the first "
            "retrain round"
        )
    version = project.deployed_version
    if version is None:
        raise PrefillRefused(f"project {project.name!r} has no deployed model version")
    stored = {
        **(project.prefill_settings or {}),
        **check_overrides(overrides or {}, what="overrides"),
    }
    settings = resolve_settings(mode=PREFILL, project_settings=stored, params=PREFILL_DEFAULTS)
    if max_images is not None and max_images < 1:
        raise PrefillRefused(f"max_images must be at least 1, got {max_images}")
    generator = SamAutomaticMaskGenerator(
        model_for_version(version), **settings, output_mode="coco_rle"
    )
    ids = list(split.image_ids)[:max_images]
    counts = MatchCounts()
    without = 0
    store = get_blob_store()
    for image in Image.objects.filter(project=project, pk__in=ids).order_by("id"):
        truth = [
            mask.rle
            for mask in Mask.objects.filter(
                image=image, status=Mask.Status.ACCEPTED, source__in=PEOPLE_SOURCES
            ).select_related("image")
        ]
        if not truth:
            without += 1
            continue
        records = generator.generate(load_rgb_array(store.get_bytes(image.blob_key)))
        counts.add(rle_iou([record["segmentation"] for record in records], truth))
    return {
        "model_version_id": version.pk,
        "settings": settings,
        "images_without_masks": without,
        **counts.summary(),
    }
