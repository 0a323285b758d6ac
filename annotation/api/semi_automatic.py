"""The semi-automatic stage: start a prefill run, read or change the prefill settings (admins);
reject a wrong prefilled mask in the tool, or take the rejection back (annotators)."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.ids import IdField
from annotation.api.masks import MaskOutput
from annotation.permissions import acting_user, require_admin
from annotation.selectors.projects import mask_get_for_user, project_get_for_user
from annotation.services.semi_automatic import (
    PREFILL_DEFAULTS,
    prefill_mask_reject,
    prefill_mask_restore,
    prefill_settings_resolved,
    prefill_settings_set,
    prefill_start,
)
from engine.api import JobOutput


class PrefillStartInput(serializers.Serializer[Any]):
    image_ids = serializers.ListField(
        child=IdField(),
        required=False,
        allow_empty=False,
        max_length=100_000,
        help_text="images to prefill (of this project); omitted: the todo images that no "
        "prefill run has done or is working on",
    )


class PrefillSettingsOutput(serializers.Serializer[Any]):
    overrides = serializers.DictField(help_text="the project's own settings (prefill_settings)")
    defaults = serializers.DictField(help_text="PREFILL_DEFAULTS: the calibrated strict settings")
    resolved = serializers.DictField(help_text="what a prefill run started now would use")


class PrefillSettingsInput(serializers.Serializer[Any]):
    settings = serializers.DictField(
        help_text="generator settings overriding the defaults, e.g. "
        '{"pred_iou_thresh": 0.9}; {"settings": {}} returns to the defaults'
    )


def _settings_body(project: Any) -> dict[str, Any]:
    return {
        "overrides": dict(project.prefill_settings or {}),
        "defaults": dict(PREFILL_DEFAULTS),
        "resolved": prefill_settings_resolved(project=project),
    }


class PrefillStartApi(APIView):
    @extend_schema(
        operation_id="prefill_start",
        request=PrefillStartInput,
        responses={202: JobOutput},
        description="Prefill images with the deployed model's confident masks (admins; the "
        "project must be semi_automatic). 400 `prefill_refused` when there is nothing to "
        "prefill, for ids that are not images of the project or for done images; "
        "`automatic_refused` without a deployed model.",
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        data = PrefillStartInput(data=request.data)
        data.is_valid(raise_exception=True)
        job = prefill_start(
            project=project,
            user=acting_user(request.user),
            image_ids=data.validated_data.get("image_ids"),
        )
        return Response(
            JobOutput(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )


class PrefillSettingsApi(APIView):
    @extend_schema(operation_id="prefill_settings_get", responses={200: PrefillSettingsOutput})
    def get(self, request: Request, project_id: int) -> Response:
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        return Response(PrefillSettingsOutput(_settings_body(project)).data)

    @extend_schema(
        operation_id="prefill_settings_set",
        request=PrefillSettingsInput,
        responses={200: PrefillSettingsOutput},
        description="400 `invalid_settings` names an unknown key or a bad value; nothing is "
        "saved then. Runs already started keep their settings.",
    )
    def put(self, request: Request, project_id: int) -> Response:
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_admin(user=request.user, project=project)
        data = PrefillSettingsInput(data=request.data)
        data.is_valid(raise_exception=True)
        prefill_settings_set(
            project=project, settings=data.validated_data["settings"], user=request.user
        )
        return Response(PrefillSettingsOutput(_settings_body(project)).data)


class PrefillRejectApi(APIView):
    @extend_schema(
        operation_id="prefill_mask_reject",
        request=None,
        responses={200: MaskOutput},
        description="Reject a wrong prefilled (proposed) mask of an image you are annotating: "
        "it is kept as `rejected`, out of training and exports. 400 `prefill_refused` for "
        "another kind of mask or a done image, 409 `lease_taken` when someone else holds "
        "the image.",
    )
    def post(self, request: Request, mask_id: int) -> Response:
        mask = mask_get_for_user(user=request.user, mask_id=mask_id)
        rejected = prefill_mask_reject(mask=mask, user=acting_user(request.user))
        return Response(MaskOutput(rejected).data)


class PrefillRestoreApi(APIView):
    @extend_schema(
        operation_id="prefill_mask_restore",
        request=None,
        responses={200: MaskOutput},
        description="Undo a rejection made in the tool: the mask is proposed again.",
    )
    def post(self, request: Request, mask_id: int) -> Response:
        mask = mask_get_for_user(user=request.user, mask_id=mask_id)
        restored = prefill_mask_restore(mask=mask, user=acting_user(request.user))
        return Response(MaskOutput(restored).data)
