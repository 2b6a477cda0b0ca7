"""The case report as a FHIR R4 (4.0.1) DiagnosticReport for a laboratory information system.

One DiagnosticReport (LOINC 24318-8, manual differential panel) with the differential as contained Observations,
each coded with LOINC "/100 leukocytes in Blood" terms, valued in UCUM, with the adult reference range and an
interpretation flag. Cells a reviewer reported apart (smudge, artefact, other / abnormal) are counts with a text
code (LOINC has no code for "counted apart in a digital differential"). The patient is referred to by the
laboratory's own patient reference, the report by its accession number. Plain JSON: no FHIR library is needed at
run time; the tests validate the output against the R4 models of `fhir.resources`.
"""

from __future__ import annotations

from django.conf import settings

from .differential import canonical
from .report import CaseReport

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
PANEL = {"system": LOINC, "code": "24318-8", "display": "Manual differential panel - Blood"}

# Method-less "/100 leukocytes in Blood" terms (a digital morphology count is neither an analyser's automated
# differential nor a microscope count alone).
LOINC_BY_TYPE: dict[str, tuple[str, str]] = {
    "neutrophil": ("26511-6", "Neutrophils/100 leukocytes in Blood"),
    "lymphocyte": ("26478-8", "Lymphocytes/100 leukocytes in Blood"),
    "monocyte": ("26485-3", "Monocytes/100 leukocytes in Blood"),
    "eosinophil": ("26450-7", "Eosinophils/100 leukocytes in Blood"),
    "basophil": ("30180-4", "Basophils/100 leukocytes in Blood"),
    "ig": ("38518-7", "Immature granulocytes/100 leukocytes in Blood"),
    "erythroblast": ("19048-8", "Nucleated erythrocytes/100 leukocytes in Blood"),
}
UNITS = {"%": ("%", "%"), "/100 WBC": ("/100 WBC", "/100{WBCs}")}
FLAG_CODES = {"high": ("H", "High"), "low": ("L", "Low"), "": ("N", "Normal")}


def _quantity(value: float, unit: str) -> dict:
    shown, code = UNITS[unit]
    return {"value": round(float(value), 1), "unit": shown, "system": UCUM, "code": code}


def _subject(report: CaseReport) -> dict:
    reference = report.case.patient_reference
    if reference:
        return {"identifier": {"system": settings.REPORT_FHIR_PATIENT_SYSTEM, "value": reference}}
    return {"display": "Patient not identified in HematoVision"}


def _observation(report: CaseReport, row, index: int, subject: dict, effective: str) -> dict:
    code, display = LOINC_BY_TYPE[canonical(row.label)]
    interpretation, interpretation_display = FLAG_CODES[row.flag]
    observation = {
        "resourceType": "Observation",
        "id": f"obs-{index}",
        "status": report.status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                        "display": "Laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": row.name},
        "subject": subject,
        "effectiveDateTime": effective,
        "valueQuantity": _quantity(row.value, row.unit),
        "interpretation": [
            {"coding": [{"system": INTERPRETATION, "code": interpretation, "display": interpretation_display}]}
        ],
        "note": [{"text": f"{row.count} cell(s) counted, {row.reviewed} confirmed by a pathologist."}],
    }
    if row.low is not None and row.high is not None:
        observation["referenceRange"] = [
            {"low": _quantity(row.low, row.unit), "high": _quantity(row.high, row.unit), "text": "Adult"}
        ]
    return observation


def _count_observation(report: CaseReport, text: str, count: int, index: int, subject: dict, effective: str):
    return {
        "resourceType": "Observation",
        "id": f"obs-{index}",
        "status": report.status,
        "code": {"text": text},
        "subject": subject,
        "effectiveDateTime": effective,
        "valueInteger": int(count),
    }


def conclusion(report: CaseReport) -> str:
    parts = []
    if report.critical:
        parts.append("CRITICAL FINDING: a reviewer marked at least one cell other / abnormal.")
    flags = [f"{row.name} {'above' if row.flag == 'high' else 'below'} range" for row in report.differential.flags]
    parts.append("Outside the adult reference range: " + "; ".join(flags) + "." if flags else "Within adult ranges.")
    apart = [f"{row.name}: {row.count}" for row in report.differential.reviewer_rows if row.count]
    if apart:
        parts.append("Reported apart: " + ", ".join(apart) + ".")
    parts.extend(comment.text for comment in report.comments)
    return " ".join(parts)


def diagnostic_report(report: CaseReport) -> dict:
    case = report.case
    subject = _subject(report)
    effective = case.created_at.isoformat()
    contained = []
    for row in report.differential.rows:
        if row.value is None or canonical(row.label) not in LOINC_BY_TYPE:
            continue  # platelets (counted only) and classes without a LOINC term
        contained.append(_observation(report, row, len(contained) + 1, subject, effective))
    contained.append(
        _count_observation(
            report, "Leukocytes counted", report.differential.leukocytes, len(contained) + 1, subject, effective
        )
    )
    for row in report.differential.reviewer_rows:
        contained.append(
            _count_observation(report, f"{row.name} (counted apart)", row.count, len(contained) + 1, subject, effective)
        )
    resource = {
        "resourceType": "DiagnosticReport",
        "id": f"case-{case.pk}",
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/DiagnosticReport"]},
        "identifier": [{"system": settings.REPORT_FHIR_ACCESSION_SYSTEM, "value": case.accession_id}],
        "status": report.status,
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM", "display": "Hematology"}
                ]
            }
        ],
        "code": {"coding": [PANEL], "text": "Leukocyte differential (digital morphology)"},
        "subject": subject,
        "effectiveDateTime": effective,
        "issued": (case.signed_at or report.generated_at).isoformat(),
        "performer": [{"display": report.header.name}],
        "contained": contained,
        "result": [{"reference": f"#{observation['id']}"} for observation in contained],
        "conclusion": conclusion(report),
    }
    if case.signed_by_id:
        signer = case.signed_by
        resource["resultsInterpreter"] = [{"display": signer.get_full_name() or signer.email}]
    if report.model_versions:
        resource["extension"] = [
            {
                "url": "urn:hematovision:fhir:model-version",
                "valueString": ", ".join(report.model_versions),
            }
        ]
    return resource
