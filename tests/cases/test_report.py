"""The case report: page, PDF, FHIR R4 DiagnosticReport (validated against the R4 models), comments."""

import io
import json
import os

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from fhir.resources import __fhir_version__ as FHIR_VERSION
from fhir.resources.diagnosticreport import DiagnosticReport
from PIL import Image

from audit.models import AuditEvent
from cases import storage
from cases.models import Case, CaseComment
from cases.report import CommentRefused, add_comment, build_report
from cases.report_fhir import diagnostic_report
from cases.report_pdf import render_pdf
from cases.review_services import amend_cells, review_cells, sign_case
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

LABELS = ["neutrophil"] * 3 + ["lymphocyte", "eosinophil"]


def stored_image(case, index):
    buffer = io.BytesIO()
    Image.new("RGB", (60, 60), (200, 120 + 10 * index, 160)).save(buffer, format="PNG")
    return CellImageFactory(case=case, storage_key=storage.save(buffer.getvalue()), content_type="image/png")


@pytest.fixture
def case(db):
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW, patient_reference="MRN-42")
    version = ModelVersionFactory(
        name="pbc-test-1", classes=["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"]
    )
    for index, label in enumerate(LABELS):
        PredictionFactory(image=stored_image(case, index), model_version=version, label=label)
    return case


def ids(case):
    return list(case.images.order_by("pk").values_list("pk", flat=True))


def signed(case, pathologist):
    review_cells(case=case, image_ids=ids(case)[:1], reviewer=pathologist, to_label="abnormal", reason="blast?")
    review_cells(case=case, image_ids=ids(case)[1:], reviewer=pathologist)
    return sign_case(case=case, signer=pathologist)


def test_fhir_report_of_a_signed_case_is_valid_r4_with_loinc_coded_observations(case, pathologist, settings):
    settings.REPORT_LAB_NAME = "Central Haematology Lab"
    add_comment(case=case, author=pathologist, text="Film reviewed at the microscope.")
    resource = diagnostic_report(build_report(case=signed(case, pathologist)))
    assert FHIR_VERSION == "4.0.1"
    parsed = DiagnosticReport.parse_obj(json.loads(json.dumps(resource)))
    assert (parsed.status, parsed.code.coding[0].code, parsed.identifier[0].value) == (
        "final",
        "24318-8",
        case.accession_id,
    )
    assert parsed.subject.identifier.value == "MRN-42"
    assert parsed.performer[0].display == "Central Haematology Lab"
    observations = {o.code.coding[0].code: o for o in parsed.contained if o.code.coding}
    # 2 neutrophils and 1 each of lymphocyte and eosinophil are leukocytes (the abnormal cell is counted apart).
    assert observations["26511-6"].valueQuantity.value == 50.0
    assert observations["26511-6"].valueQuantity.code == "%"
    assert observations["26450-7"].interpretation[0].coding[0].code == "H"  # 25% eosinophils > 6%
    assert observations["26450-7"].referenceRange[0].high.value == 6.0
    apart = {o.code.text: o.valueInteger for o in parsed.contained if not o.code.coding}
    assert apart["Other / abnormal cell (counted apart)"] == 1 and apart["Leukocytes counted"] == 4
    assert [reference.reference for reference in parsed.result] == [f"#{o.id}" for o in parsed.contained]
    assert "CRITICAL FINDING" in parsed.conclusion and "Film reviewed at the microscope." in parsed.conclusion


def test_fhir_status_follows_signing_and_amendment(case, pathologist):
    assert diagnostic_report(build_report(case=case))["status"] == "preliminary"
    case = signed(case, pathologist)
    amend_cells(case=case, image_ids=ids(case)[1:2], amender=pathologist, to_label="monocyte", reason="re-read")
    resource = diagnostic_report(build_report(case=case))
    assert resource["status"] == "amended"
    DiagnosticReport.parse_obj(resource)


def test_pdf_download_is_a_pdf_and_audited(case, pathologist, client):
    signed(case, pathologist)
    client.force_login(pathologist)
    response = client.get(reverse("cases:report_pdf", args=[case.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-") and b"/Type /Page" in response.content
    assert response["Content-Disposition"] == f'attachment; filename="report-{case.accession_id}.pdf"'
    assert AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT, details__report="pdf").exists()


def test_pdf_renders_every_cell_image_of_a_small_case(case, pathologist):
    # Five distinct images (fpdf2 stores an image used twice only once).
    pdf = render_pdf(build_report(case=signed(case, pathologist)))
    assert pdf.count(b"/Subtype /Image") == len(LABELS)


def test_report_page_shows_header_patient_model_critical_and_signer(case, pathologist, technician, client, settings):
    settings.REPORT_LAB_NAME = "Central Haematology Lab"
    settings.REPORT_LAB_ADDRESS = "1 Lab Street|Springfield"
    signed(case, pathologist)
    client.force_login(technician)
    content = client.get(reverse("cases:report", args=[case.pk])).content.decode()
    for text in ["Central Haematology Lab", "1 Lab Street · Springfield", "MRN-42", "pbc-test-1", pathologist.email]:
        assert text in content
    assert 'data-testid="report-critical"' in content and 'data-testid="comment-form"' not in content


def test_fhir_page_download_and_api(case, pathologist, client):
    client.force_login(pathologist)
    response = client.get(reverse("cases:report_fhir", args=[case.pk]))
    assert response["Content-Type"] == "application/fhir+json"
    DiagnosticReport.parse_obj(json.loads(response.content))
    api = client.get(reverse("api-case-fhir", args=[case.pk]))
    assert api.status_code == 200 and api.json()["resourceType"] == "DiagnosticReport"


def test_comments_after_signing_are_addenda_and_empty_ones_are_refused(case, pathologist, client):
    signed(case, pathologist)
    client.force_login(pathologist)
    refused = client.post(reverse("cases:report_comment", args=[case.pk]), {"text": "   "})
    assert refused.status_code == 400 and "Write the comment first." in refused.content.decode()
    client.post(reverse("cases:report_comment", args=[case.pk]), {"text": "Smear repeated: same result."})
    comment = CaseComment.objects.get()
    assert comment.after_signing and comment.author == pathologist
    with pytest.raises(PermissionError):
        comment.delete()


def test_only_pathologists_comment_and_length_is_limited(case, technician, pathologist):
    with pytest.raises(PermissionDenied):
        add_comment(case=case, author=technician, text="x")
    with pytest.raises(CommentRefused, match="too long"):
        add_comment(case=case, author=pathologist, text="x" * 4001)
    assert not CaseComment.objects.exists()


def test_the_pdf_library_is_not_loaded_by_processes_that_only_route_urls():
    """fpdf2 and fontTools hold ~50 MB; every web and Celery process loads the URL configuration."""
    import subprocess
    import sys

    script = (
        "import django, sys; django.setup(); "
        "from django.urls import get_resolver; get_resolver().url_patterns; "
        "from django.core import checks; checks.run_checks(); "
        "print('fpdf' in sys.modules)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hematovision.settings.local"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
