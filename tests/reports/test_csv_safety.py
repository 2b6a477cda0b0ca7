"""Every CSV the platform writes neutralises cells a spreadsheet would run as formulas."""

import csv
import io

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from audit.services import record
from hematovision.csv_safety import SafeWriter, csv_text_chunks, neutralise

ATTACK_EMAIL = "=cmd|'/C calc'!A0@x.test"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("neutrophil", "neutrophil"),
        ("a=b", "a=b"),
        ("", ""),
        (-1.5, -1.5),
        (0, 0),
        (None, None),
    ],
)
def test_neutralise(value, expected):
    assert neutralise(value) == expected


def test_writer_and_chunks_neutralise_every_text_cell():
    stream = io.StringIO()
    SafeWriter(stream).writerow(["=a", -2, "b"])
    chunks = list(csv_text_chunks([["x", "=y"]] * 5, rows_per_chunk=2))
    assert stream.getvalue() == "'=a,-2,b\r\n"
    assert len(chunks) == 3
    assert list(csv.reader(io.StringIO("".join(chunks)))) == [["x", "'=y"]] * 5


def test_audit_csv_neutralises_a_formula_in_an_email(make_user, supervisor, client):
    attacker = make_user("technician", email=ATTACK_EMAIL)
    record(action=AuditEvent.Action.SIGN_IN, actor=attacker, details={"note": "-2+3"})
    client.force_login(supervisor)
    response = client.get(reverse("reports:audit_csv"), {"action": "sign_in"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    (row,) = [row for row in rows[1:] if ATTACK_EMAIL in row[1]]
    assert row[1] == "'" + ATTACK_EMAIL
    assert all(not cell.startswith(("=", "+", "-", "@")) for line in rows for cell in line)


def test_dashboard_csv_is_written_by_the_same_helper(scored_version, supervisor, client):
    scored_version.name = "+model"
    scored_version.save(update_fields=["name"])
    client.force_login(supervisor)
    response = client.get(
        reverse("reports:dashboard_csv"),
        {"model_version": scored_version.pk, "start": "2025-03-01", "end": "2025-03-03"},
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert ["summary", "model_version", "", "", "'+model"] in rows
