import csv
import hashlib
import hmac
import io
import re

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from audit.models import AuditEvent
from cases.review_services import review_cells
from reports.selectors import ExportFilter
from reports.services import case_pseudonym, export_cells, pseudonym_key
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

IDENTIFYING = ["MRN-SECRET-0042", "ACC-IDENT-7", "john_doe_smear.png", "Dr Jane Smith", "@lab.example"]


@pytest.fixture
def identified_case(db, pathologist):
    case = CaseFactory(accession_id="ACC-IDENT-7", patient_reference="MRN-SECRET-0042")
    version = ModelVersionFactory(classes=["neutrophil", "lymphocyte"])
    for name, label in [("john_doe_smear.png", "neutrophil"), ("second.png", "lymphocyte")]:
        PredictionFactory(image=CellImageFactory(case=case, original_name=name), model_version=version, label=label)
    first = case.images.order_by("pk").first()
    review_cells(case=case, image_ids=[first.pk], reviewer=pathologist, to_label="lymphocyte", reason="Dr Jane Smith")
    return case


def export_table(researcher, **filters):
    rows = list(export_cells(actor=researcher, export_filter=ExportFilter(**filters)))
    return rows[0], [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def test_columns_are_exactly_the_anonymized_ones(identified_case, researcher):
    header, _ = export_table(researcher)
    assert header == [
        "case_pseudonym",
        "cell_pseudonym",
        "model_version",
        "predicted_label",
        "confidence",
        "flagged",
        "prob_neutrophil",
        "prob_lymphocyte",
        "final_label",
        "reviewed",
        "reclassified",
        "uploaded_month",
        "predicted_month",
        "reviewed_month",
    ]


def test_no_value_identifies_a_patient_a_person_or_a_file(identified_case, researcher):
    header, rows = export_table(researcher)
    text = "\n".join(",".join(map(str, row.values())) for row in rows)
    for secret in IDENTIFYING:
        assert secret not in text


def test_dates_are_coarsened_to_the_month(identified_case, researcher):
    _, rows = export_table(researcher)
    for row in rows:
        for column in ("uploaded_month", "predicted_month"):
            assert re.fullmatch(r"\d{4}-\d{2}", row[column])
        assert row["reviewed_month"] == "" or re.fullmatch(r"\d{4}-\d{2}", row["reviewed_month"])


def test_case_pseudonym_is_the_keyed_hmac_of_the_case(identified_case, researcher, settings):
    _, rows = export_table(researcher)
    expected = hmac.new(b"test-pseudonym-key", f"case:{identified_case.pk}".encode(), hashlib.sha256).hexdigest()
    assert {row["case_pseudonym"] for row in rows} == {expected[:32]}


def test_cell_pseudonym_is_the_keyed_hmac_of_the_cell_not_its_id(identified_case, researcher):
    _, rows = export_table(researcher)
    ids = sorted(identified_case.images.values_list("pk", flat=True))
    expected = {hmac.new(b"test-pseudonym-key", f"cell:{pk}".encode(), hashlib.sha256).hexdigest()[:32] for pk in ids}
    assert {row["cell_pseudonym"] for row in rows} == expected
    header, _ = export_table(researcher)
    assert "cell_id" not in header


def test_pseudonyms_are_stable_across_exports_and_change_with_the_key(identified_case, researcher, settings):
    _, first = export_table(researcher)
    _, again = export_table(researcher)
    assert [(row["case_pseudonym"], row["cell_pseudonym"]) for row in first] == [
        (row["case_pseudonym"], row["cell_pseudonym"]) for row in again
    ]
    settings.EXPORT_PSEUDONYM_KEY = "another-export-key"
    _, rekeyed = export_table(researcher)
    assert not {row["cell_pseudonym"] for row in first} & {row["cell_pseudonym"] for row in rekeyed}
    assert not {row["case_pseudonym"] for row in first} & {row["case_pseudonym"] for row in rekeyed}


def test_a_model_version_name_that_looks_like_a_formula_is_neutralised(db, researcher, client):
    version = ModelVersionFactory(name='=HYPERLINK("http://x.test")', classes=["neutrophil", "lymphocyte"])
    PredictionFactory(image=CellImageFactory(), model_version=version, label="neutrophil")
    client.force_login(researcher)
    response = client.post(reverse("reports:exports"), {"model_version": version.pk})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[1][2] == '\'=HYPERLINK("http://x.test")'


def test_final_label_and_review_state(identified_case, researcher):
    _, rows = export_table(researcher)
    first, second = sorted(rows, key=lambda row: row["predicted_label"], reverse=True)
    assert (first["predicted_label"], first["final_label"], first["reviewed"], first["reclassified"]) == (
        "neutrophil",
        "lymphocyte",
        1,
        1,
    )
    assert (second["final_label"], second["reviewed"]) == ("", 0)


def test_reviewed_only_filter(identified_case, researcher):
    _, rows = export_table(researcher, reviewed_only=True)
    assert [row["reviewed"] for row in rows] == [1]


def test_without_a_configured_key_one_is_derived_from_the_secret_key(settings):
    settings.EXPORT_PSEUDONYM_KEY = ""
    derived = pseudonym_key()
    settings.SECRET_KEY = "another-secret-key-for-this-test"
    assert derived and pseudonym_key() != derived
    assert case_pseudonym(case_id=1, key=derived) != case_pseudonym(case_id=1, key=b"test-pseudonym-key")


def test_each_export_is_audited(identified_case, researcher):
    export_table(researcher)
    event = AuditEvent.objects.get(action=AuditEvent.Action.EXPORT)
    assert (event.actor, event.details["rows"], event.details["kind"]) == (researcher, 2, "cells")


@pytest.mark.parametrize("role_fixture", ["technician", "pathologist", "supervisor"])
def test_only_researchers_and_admins_export(db, role_fixture, request):
    with pytest.raises(PermissionDenied):
        export_cells(actor=request.getfixturevalue(role_fixture), export_filter=ExportFilter())


def test_export_page_downloads_csv(identified_case, researcher, client):
    client.force_login(researcher)
    response = client.post(reverse("reports:exports"), {"reviewed_only": "on"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 2 and rows[0][0] == "case_pseudonym"


def test_export_page_rejects_a_reversed_period_and_keeps_the_input(identified_case, researcher, client):
    client.force_login(researcher)
    response = client.post(reverse("reports:exports"), {"start": "2025-03-10", "end": "2025-03-01"})
    assert response.status_code == 400
    assert "The end date is before the start date." in response.content.decode()
    assert 'value="2025-03-10"' in response.content.decode()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT).exists()
