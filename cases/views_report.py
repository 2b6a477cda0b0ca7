"""The case report: the page, its PDF and its FHIR R4 DiagnosticReport, and pathologists' comments."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from accounts.permissions import capability_required, has_capability
from audit.models import AuditEvent
from audit.services import record

from . import selectors
from .models import Case
from .report import CommentRefused, add_comment, build_report
from .report_fhir import diagnostic_report

READERS = ("view_cases", "review_cells")


def _case_or_404(pk: int) -> Case:
    try:
        return selectors.get_case(pk=pk)
    except Case.DoesNotExist as exc:
        raise Http404("No such case.") from exc


def _download(request, case: Case, body: bytes, *, content_type: str, extension: str, kind: str) -> HttpResponse:
    record(
        action=AuditEvent.Action.EXPORT, obj=case, details={"case": case.accession_id, "report": kind}, request=request
    )
    response = HttpResponse(body, content_type=content_type)
    safe = "".join(char if char.isalnum() or char in "-_" else "_" for char in case.accession_id)
    response["Content-Disposition"] = f'attachment; filename="report-{safe}.{extension}"'
    response["Cache-Control"] = "private, no-store"
    return response


@require_GET
@capability_required(*READERS)
def report_page(request, pk: int):
    case = _case_or_404(pk)
    context = {
        "report": build_report(case=case),
        "case": case,
        "can_comment": has_capability(request.user, "review_cells"),
    }
    return render(request, "cases/report.html", context)


@require_GET
@capability_required(*READERS)
def report_pdf(request, pk: int):
    # fpdf2 and fontTools hold ~50 MB per process; imported where a PDF is made, not in every web and
    # Celery process that loads the URL configuration.
    from .report_pdf import render_pdf

    case = _case_or_404(pk)
    body = render_pdf(build_report(case=case))
    return _download(request, case, body, content_type="application/pdf", extension="pdf", kind="pdf")


@require_GET
@capability_required(*READERS)
def report_fhir(request, pk: int):
    case = _case_or_404(pk)
    # The document for the laboratory information system is in the site's language, whatever the browser's.
    with translation.override(settings.LANGUAGE_CODE):
        body = json.dumps(diagnostic_report(build_report(case=case)), indent=2).encode()
    return _download(request, case, body, content_type="application/fhir+json", extension="fhir.json", kind="fhir")


@require_POST
@capability_required("review_cells")
def report_comment(request, pk: int):
    case = _case_or_404(pk)
    try:
        add_comment(case=case, author=request.user, text=request.POST.get("text", ""), request=request)
    except CommentRefused as exc:
        context = {"report": build_report(case=case), "case": case, "can_comment": True, "comment_error": str(exc)}
        context["comment_text"] = request.POST.get("text", "")
        return render(request, "cases/report.html", context, status=400)
    messages.success(request, _("Comment added to the report."))
    return redirect("cases:report", pk=case.pk)
