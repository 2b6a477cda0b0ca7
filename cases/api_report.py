"""The case report as FHIR R4 for a laboratory information system (mounted under /api/v1/)."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from django.utils import translation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasCapability
from audit.models import AuditEvent
from audit.services import record

from . import selectors
from .models import Case
from .report import build_report
from .report_fhir import diagnostic_report


class CaseFhirReportAPI(APIView):
    permission_classes = [HasCapability]
    required_capabilities = ("view_cases", "review_cells")

    @extend_schema(
        summary="The case report as a FHIR R4 DiagnosticReport",
        description=(
            "A DiagnosticReport (LOINC 24318-8) with the differential as contained Observations (LOINC codes, UCUM "
            "units, adult reference ranges, H/L/N interpretation). Status `preliminary` until signed, `final` once "
            "signed, `amended` after an amendment."
        ),
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request, pk: int):
        try:
            case = selectors.get_case(pk=pk)
        except Case.DoesNotExist as exc:
            raise Http404("No such case.") from exc
        record(
            action=AuditEvent.Action.EXPORT,
            obj=case,
            details={"case": case.accession_id, "report": "fhir-api"},
            request=request,
        )
        # In the site's language, whatever the client's Accept-Language (as the page's download).
        with translation.override(settings.LANGUAGE_CODE):
            return Response(diagnostic_report(build_report(case=case)))
