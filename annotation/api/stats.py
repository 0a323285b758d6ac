"""Annotation speed per project and per annotator: s/mask, clicks/mask, masks/image; and how
many of the masks review rejected."""

from typing import Any

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.permissions import REVIEWER, has_role, require_role
from annotation.selectors.projects import project_get_for_user
from annotation.selectors.stats import MAX_DAYS, annotator_stats, has_worked_in, project_stats


class StatsInput(serializers.Serializer[Any]):
    days = serializers.IntegerField(
        required=False, default=30, min_value=1, max_value=MAX_DAYS, help_text="today included"
    )


class RatesOutput(serializers.Serializer[Any]):
    masks = serializers.IntegerField()
    seconds_per_mask = serializers.FloatField(allow_null=True)
    clicks_per_mask = serializers.FloatField(allow_null=True)


class ReviewRatesOutput(serializers.Serializer[Any]):
    masks_reviewed = serializers.IntegerField(
        help_text="of the masks made in the window, those a reviewer decided on"
    )
    masks_rejected = serializers.IntegerField(help_text="of those, the ones rejected now")
    rejection_rate = serializers.FloatField(
        allow_null=True, help_text="masks_rejected / masks_reviewed (null before any review)"
    )


class TotalsOutput(RatesOutput, ReviewRatesOutput):
    images_total = serializers.IntegerField()
    images_done = serializers.IntegerField()
    images_skipped = serializers.IntegerField(help_text="the project's images skipped now")
    masks_per_image = serializers.FloatField(allow_null=True)
    prefilled = serializers.IntegerField(help_text="masks made by prefill runs in the window")
    prefill_kept = serializers.IntegerField(help_text="of those, accepted")
    prefill_rejected = serializers.IntegerField(help_text="of those, rejected")
    prefill_pending = serializers.IntegerField(help_text="of those, still proposed")


class DayOutput(RatesOutput):
    date = serializers.DateField()
    masks_per_image = serializers.FloatField(allow_null=True)
    prefilled = serializers.IntegerField(help_text="masks made by prefill runs that day")


class AnnotatorRatesOutput(RatesOutput, ReviewRatesOutput):
    user_id = serializers.IntegerField()
    username = serializers.CharField()
    images_skipped = serializers.IntegerField(
        help_text="images this annotator skipped in the window (and still skipped)"
    )


class CategoryRatesOutput(RatesOutput, ReviewRatesOutput):
    category_id = serializers.IntegerField(
        allow_null=True, help_text="null: the masks without a category"
    )
    name = serializers.CharField(allow_null=True)
    color = serializers.CharField(allow_null=True)


class AnnotatorStatsOutput(serializers.Serializer[Any]):
    totals = TotalsOutput()
    per_day = DayOutput(many=True)


class ProjectStatsOutput(AnnotatorStatsOutput):
    per_annotator = AnnotatorRatesOutput(many=True)
    per_category = CategoryRatesOutput(
        many=True, help_text="per category (then without one); empty without categories"
    )


def _days(request: Request) -> int:
    data = StatsInput(data=request.query_params)
    data.is_valid(raise_exception=True)
    return int(data.validated_data["days"])


class ProjectStatsApi(APIView):
    @extend_schema(
        operation_id="project_stats", parameters=[StatsInput], responses={200: ProjectStatsOutput}
    )
    def get(self, request: Request, project_id: int) -> Response:
        """The project's figures over the last ``days`` days (reviewers and admins)."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        require_role(user=request.user, project=project, role=REVIEWER)
        stats = project_stats(project=project, days=_days(request))
        return Response(ProjectStatsOutput(stats).data)


class AnnotatorStatsApi(APIView):
    @extend_schema(
        operation_id="annotator_stats",
        parameters=[StatsInput],
        responses={200: AnnotatorStatsOutput},
    )
    def get(self, request: Request, project_id: int, user_id: int) -> Response:
        """One annotator's figures: annotators read their own, reviewers and admins anyone's."""
        project = project_get_for_user(user=request.user, project_id=project_id)
        if user_id != request.user.pk and not has_role(
            user=request.user, project=project, role=REVIEWER
        ):
            raise PermissionDenied("annotators may read only their own statistics")
        if user_id != request.user.pk and not has_worked_in(project=project, user_id=user_id):
            raise Http404("no such annotator in this project")
        stats = annotator_stats(project=project, user_id=user_id, days=_days(request))
        return Response(AnnotatorStatsOutput(stats).data)
