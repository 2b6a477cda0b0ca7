"""REST API for reports (mounted under /api/v1/): model metrics, the anonymized cell export, the audit trail."""

from __future__ import annotations

import json

from django.utils import timezone
from django.utils.translation import gettext
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, renderers, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasCapability
from audit.models import AuditEvent
from inference.models import ModelVersion

from . import selectors, services
from .views import csv_response


class CSVRenderer(renderers.BaseRenderer):
    """Lets clients ask for text/csv; the CSV itself is streamed by the view, errors come out as JSON text."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode()


class PeriodQuerySerializer(serializers.Serializer):
    start = serializers.DateField(required=False, help_text="First day, included (YYYY-MM-DD).")
    end = serializers.DateField(required=False, help_text="Last day, included (YYYY-MM-DD).")

    def validate(self, attrs):
        problem = selectors.period_problem(start=attrs.get("start"), end=attrs.get("end"))
        if problem:
            raise ValidationError({"end": [problem]})
        return attrs


class MetricsQuerySerializer(PeriodQuerySerializer):
    model_version = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), required=False, help_text="Default: the active version."
    )


class ExportQuerySerializer(PeriodQuerySerializer):
    model_version = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), required=False, help_text="Default: every version."
    )
    reviewed_only = serializers.BooleanField(required=False, default=False)


class AuditQuerySerializer(PeriodQuerySerializer):
    action = serializers.ChoiceField(choices=AuditEvent.Action.choices, required=False)
    actor = serializers.CharField(
        required=False, allow_blank=True, max_length=254, help_text="Part of the actor's email."
    )
    object_type = serializers.CharField(required=False, allow_blank=True, max_length=60)
    object_id = serializers.CharField(required=False, allow_blank=True, max_length=64)


def _parsed(serializer_class, request):
    query = serializer_class(data=request.query_params)
    # DRF reads `?start=` as "not given"; a client that sends an empty value meant something, so say so.
    blank = [
        name
        for name, field in query.fields.items()
        if request.query_params.get(name) == "" and not getattr(field, "allow_blank", False)
    ]
    if blank:
        raise ValidationError({name: [gettext("This parameter may not be empty.")] for name in blank})
    query.is_valid(raise_exception=True)
    return query.validated_data


class VersionRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ClassMetricsSerializer(serializers.Serializer):
    label = serializers.CharField()
    support = serializers.IntegerField()
    predicted = serializers.IntegerField()
    precision = serializers.FloatField(allow_null=True)
    recall = serializers.FloatField(allow_null=True)
    f1 = serializers.FloatField(allow_null=True)


class RocCurveSerializer(serializers.Serializer):
    label = serializers.CharField()
    fpr = serializers.ListField(child=serializers.FloatField())
    tpr = serializers.ListField(child=serializers.FloatField())
    auc = serializers.FloatField()


class CountSerializer(serializers.Serializer):
    label = serializers.CharField()
    cells = serializers.IntegerField()


class DayCountSerializer(serializers.Serializer):
    day = serializers.DateField()
    cells = serializers.IntegerField()


class DashboardMetricsSerializer(serializers.Serializer):
    model_version = VersionRefSerializer()
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    cases = serializers.IntegerField()
    cells = serializers.IntegerField()
    reviewed_cells = serializers.IntegerField(help_text="Cells with a final label.")
    scored_cells = serializers.IntegerField(
        help_text="Reviewed cells whose final label is one of the version's classes: what the metrics use."
    )
    other_labels = CountSerializer(
        many=True, help_text="Reviewed cells whose final label the model does not have (e.g. smudge); not errors."
    )
    accuracy = serializers.FloatField(allow_null=True)
    override_rate = serializers.FloatField(allow_null=True)
    flagged_cells = serializers.IntegerField()
    flagged_rate = serializers.FloatField(allow_null=True)
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)
    labels = serializers.ListField(child=serializers.CharField())
    per_class = ClassMetricsSerializer(many=True)
    confusion = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="confusion[i][j]: reviewed cells with final label labels[i] and prediction labels[j].",
    )
    roc = RocCurveSerializer(many=True)
    flagged_outcomes = CountSerializer(many=True)
    cells_per_day = DayCountSerializer(many=True)


def metrics_body(metrics: selectors.DashboardMetrics) -> dict:
    return {
        "model_version": {"id": metrics.model_version.pk, "name": metrics.model_version.name},
        "period_start": metrics.period.start,
        "period_end": metrics.period.end,
        "cases": metrics.cases,
        "cells": metrics.cells,
        "reviewed_cells": metrics.reviewed_cells,
        "scored_cells": metrics.scored_cells,
        "other_labels": [{"label": label, "cells": count} for label, count in metrics.other_labels.items()],
        "accuracy": metrics.accuracy,
        "override_rate": metrics.override_rate,
        "flagged_cells": metrics.flagged_cells,
        "flagged_rate": metrics.flagged_rate,
        "latency_p50_ms": metrics.latency_p50_ms,
        "latency_p95_ms": metrics.latency_p95_ms,
        "labels": metrics.labels,
        "per_class": metrics.per_class,
        "confusion": metrics.confusion,
        "roc": metrics.roc,
        "flagged_outcomes": [{"label": label, "cells": count} for label, count in metrics.flagged_outcomes.items()],
        "cells_per_day": [{"day": day, "cells": count} for day, count in metrics.cells_per_day],
    }


class ReportProblemSerializer(serializers.Serializer):
    detail = serializers.CharField()


class DashboardMetricsAPI(APIView):
    permission_classes = [HasCapability]
    required_capabilities = ("view_dashboard",)

    @extend_schema(
        summary="Performance of a model version over a period (default: active version, last 30 days)",
        parameters=[MetricsQuerySerializer],
        responses={200: DashboardMetricsSerializer, 404: OpenApiResponse(ReportProblemSerializer, "No model version.")},
    )
    def get(self, request):
        query = _parsed(MetricsQuerySerializer, request)
        version = query.get("model_version") or selectors.default_dashboard_version()
        if version is None:
            return Response({"detail": gettext("No model version is registered yet.")}, status=404)
        period = selectors.resolve_period(start=query.get("start"), end=query.get("end"), required=True)
        metrics = selectors.dashboard_metrics(model_version=version, period=period)
        return Response(DashboardMetricsSerializer(metrics_body(metrics)).data)


class CellExportAPI(APIView):
    permission_classes = [HasCapability]
    required_capabilities = ("export_data",)
    renderer_classes = [renderers.JSONRenderer, CSVRenderer]

    @extend_schema(
        summary="Anonymized CSV of cells (one row per prediction); every export is audited",
        description=(
            "Columns: case_pseudonym and cell_pseudonym (HMAC-SHA256 of the case and of the cell with the "
            "platform's export key, EXPORT_PSEUDONYM_KEY), "
            "model_version, predicted_label, confidence, flagged, prob_<class> for every class, final_label, "
            "reviewed, reclassified, uploaded_month, predicted_month, reviewed_month. No database id, patient "
            "reference, accession number, user, file name or free text; a text cell that a spreadsheet would "
            "read as a formula starts with an apostrophe."
        ),
        parameters=[ExportQuerySerializer],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request):
        query = _parsed(ExportQuerySerializer, request)
        export_filter = selectors.ExportFilter(
            model_version=query.get("model_version"),
            period=selectors.resolve_period(start=query.get("start"), end=query.get("end"), required=False),
            reviewed_only=query["reviewed_only"],
        )
        chunks = services.export_cells_csv(actor=request.user, export_filter=export_filter, request=request)
        return csv_response(chunks=chunks, filename=f"hematovision-cells-{timezone.localdate():%Y%m%d}.csv")


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor_email", "action", "object_type", "object_id", "details", "ip_address"]
        read_only_fields = fields


@extend_schema_view(get=extend_schema(summary="The audit trail, newest first", parameters=[AuditQuerySerializer]))
class AuditEventListAPI(generics.ListAPIView):
    permission_classes = [HasCapability]
    required_capabilities = ("view_audit",)
    serializer_class = AuditEventSerializer

    def get_queryset(self):
        query = _parsed(AuditQuerySerializer, self.request)
        audit_filter = selectors.AuditFilter(
            action=query.get("action", ""),
            actor=query.get("actor", "").strip(),
            object_type=query.get("object_type", ""),
            object_id=query.get("object_id", ""),
            period=selectors.resolve_period(start=query.get("start"), end=query.get("end"), required=False),
        )
        return selectors.audit_events(audit_filter=audit_filter)
