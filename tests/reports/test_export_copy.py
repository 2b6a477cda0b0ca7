"""The research export written by PostgreSQL (COPY) is byte for byte the one Python writes (csv_text_chunks of
export_cells' rows), on values made to break CSV: formulas, commas, quotes, newlines, unicode, NULLs."""

import datetime as dt
import hashlib
import hmac

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from cases.models import CellImage, Prediction
from cases.review_services import review_cells
from hematovision.csv_safety import csv_text_chunks
from reports import services
from reports.selectors import ExportFilter, Period
from tests.api.conftest import token_client
from tests.conftest import skip_or_fail
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

NASTY = [
    "=cmd|' /C calc'!A0",
    "+1+2",
    "-3",
    "@SUM(A1)",
    "\tstarts with a tab",
    "\rstarts with a carriage return",
    "comma, inside",
    'say "hello"',
    "two\nlines",
    "windows\r\nline",
    "ünïcødé 血球 🧪",
    "  spaces  ",
    "'already quoted'",
    "back\\slash",
    "",
]
CLASSES = ["neutrophil", "a,b", 'q"uote', "=formula", "multi\nline", "ünï"]
# JSON values a probability can hold: numbers of every shape, text, null, nested JSON, or no key at all.
PROBABILITY_VALUES = [0.25, -0.5, 1e-10, 1e20, 1, "=1+1", "x,y", None, {"a": [1, "b"]}, 0.1 + 0.2, True]
CONFIDENCES = [0.9, 1.0, 0.1234567, 1e-9, 0.0, -0.25, 0.99999951, float("nan")]


@pytest.fixture
def on_postgresql(db):
    if connection.vendor != "postgresql":
        skip_or_fail("the COPY export needs PostgreSQL: run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/hv_x")


@pytest.fixture
def nasty_cells(on_postgresql, pathologist):
    """Cells of two versions with hostile names, labels, probabilities, final labels and month boundaries."""
    versions = [
        ModelVersionFactory(name="=cmd|' /C calc'!A0 v1, \"two\"\nlines", classes=CLASSES),
        ModelVersionFactory(name="ünïcødé-v2", classes=list(reversed(CLASSES))),
    ]
    month_edge = timezone.make_aware(dt.datetime(2025, 1, 31, 23, 59, 59), dt.UTC)
    images = []
    for index in range(40):
        case = CaseFactory()
        image = CellImageFactory(case=case)
        version = versions[index % 2]
        probabilities = {
            name: PROBABILITY_VALUES[(index + position) % len(PROBABILITY_VALUES)]
            for position, name in enumerate(version.classes)
            if (index + position) % 7  # some keys missing
        }
        prediction = PredictionFactory(
            image=image,
            model_version=version,
            label=NASTY[index % len(NASTY)] if index % 4 != 3 else CLASSES[index % len(CLASSES)],
            confidence=CONFIDENCES[index % len(CONFIDENCES)],
            probabilities=probabilities,
            flagged=bool(index % 2),
        )
        if index % 4 == 0:  # a second version's prediction of the same cell
            PredictionFactory(image=image, model_version=versions[(index + 1) % 2], label="neutrophil")
        Prediction.objects.filter(pk=prediction.pk).update(created_at=month_edge + dt.timedelta(hours=index - 20))
        if index % 5 == 0:
            review_cells(case=case, image_ids=[image.pk], reviewer=pathologist, to_label="a,b", reason="x")
        elif index % 5 == 1:
            CellImage.objects.filter(pk=image.pk).update(
                final_label=NASTY[(index * 7) % len(NASTY)] or "x", final_reviewed_at=month_edge, reclassified=True
            )
        images.append(image)
    # A field image is never exported, neither are its predictions.
    field = CellImageFactory(kind=CellImage.Kind.FIELD)
    PredictionFactory(image=field, model_version=versions[0], label="neutrophil")
    return versions


def python_bytes(researcher, export_filter: ExportFilter) -> bytes:
    rows = services.export_cells(actor=researcher, export_filter=export_filter)
    return "".join(csv_text_chunks(rows)).encode()


def copied_bytes(researcher, export_filter: ExportFilter) -> bytes:
    chunks = list(services.export_cells_csv(actor=researcher, export_filter=export_filter))
    assert all(isinstance(chunk, bytes) for chunk in chunks), "PostgreSQL should write the export (COPY)"
    return b"".join(chunks)


@pytest.mark.parametrize("time_zone", ["UTC", "America/Bogota", "Asia/Kolkata"])
def test_copy_export_is_byte_identical_to_the_python_export(nasty_cells, researcher, time_zone, monkeypatch):
    monkeypatch.setattr(services, "EXPORT_CHUNK_ROWS", 7)  # lines split over several chunks
    with timezone.override(time_zone):
        expected = python_bytes(researcher, ExportFilter())
        copied = copied_bytes(researcher, ExportFilter())
    assert copied == expected
    assert expected.count(b"\r\n") > 40  # every cell's rows are there, not an empty export that matches
    markers = [b"'=cmd", b",'@SUM(A1),", b'"comma, inside"', b'"say ""hello"""', b'"two\nlines"', b'"windows\r\nline"']
    for marker in [*markers, "ünïcødé 血球 🧪".encode(), b",'\tstarts with a tab,", b",NaN,"]:
        assert marker in copied


@pytest.mark.parametrize(
    "make_filter",
    [
        lambda versions: ExportFilter(model_version=versions[0]),
        lambda versions: ExportFilter(reviewed_only=True),
        lambda versions: ExportFilter(period=Period(start=dt.date(2025, 1, 31), end=dt.date(2025, 1, 31))),
        lambda versions: ExportFilter(
            model_version=versions[1], period=Period(dt.date(2025, 2, 1), dt.date(2025, 3, 1))
        ),
        lambda versions: ExportFilter(period=Period(start=dt.date(2020, 1, 1), end=dt.date(2020, 1, 2))),  # no row
    ],
)
def test_filters_give_the_same_bytes_both_ways(nasty_cells, researcher, make_filter):
    export_filter = make_filter(nasty_cells)
    assert copied_bytes(researcher, export_filter) == python_bytes(researcher, export_filter)


@pytest.mark.parametrize("key", ["short", "k" * 64, "a key longer than sha256's block of sixty-four bytes, " * 3, ""])
def test_pseudonyms_computed_by_the_database_are_the_keyed_hmac(nasty_cells, researcher, settings, key):
    settings.EXPORT_PSEUDONYM_KEY = key
    copied = copied_bytes(researcher, ExportFilter(reviewed_only=True))
    assert copied == python_bytes(researcher, ExportFilter(reviewed_only=True))
    reviewed = CellImage.objects.exclude(final_label="").order_by("pk").first()
    expected = hmac.new(services.pseudonym_key(), f"cell:{reviewed.pk}".encode(), hashlib.sha256).hexdigest()[:32]
    assert expected.encode() in copied


def test_the_export_page_and_api_stream_the_copied_bytes_and_audit_each_export(nasty_cells, researcher, client):
    expected = python_bytes(researcher, ExportFilter(model_version=nasty_cells[1]))
    client.force_login(researcher)
    page = client.post(reverse("reports:exports"), {"model_version": nasty_cells[1].pk})
    api = token_client(researcher).get(reverse("api-export-cells"), {"model_version": nasty_cells[1].pk})
    assert page.status_code == api.status_code == 200
    assert b"".join(page.streaming_content) == expected
    assert b"".join(api.streaming_content) == expected
    events = AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT, object_type="reports.cell_export")
    assert events.count() == 3  # python_bytes, the page and the API
    assert {event.details["model_version"] for event in events} == {nasty_cells[1].name}


@pytest.mark.parametrize("role_fixture", ["technician", "pathologist", "supervisor"])
def test_only_researchers_and_admins_get_the_copied_export(on_postgresql, role_fixture, request):
    with pytest.raises(PermissionDenied):
        services.export_cells_csv(actor=request.getfixturevalue(role_fixture), export_filter=ExportFilter())
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT).exists()


def test_plain_values_take_the_same_bytes_too(on_postgresql, researcher, pathologist):
    """Lines with nothing to quote or neutralise, which PostgreSQL writes without formatting field by field."""
    version = ModelVersionFactory(name="plain-v1", classes=["neutrophil", "lymphocyte", "monocyte"])
    case = CaseFactory()
    images = [CellImageFactory(case=case) for _ in range(6)]
    for index, image in enumerate(images):
        PredictionFactory(
            image=image, model_version=version, label=version.classes[index % 3], confidence=0.5 + index / 20
        )
    review_cells(case=case, image_ids=[images[0].pk], reviewer=pathologist, to_label="monocyte", reason="x")
    copied = copied_bytes(researcher, ExportFilter())
    assert copied == python_bytes(researcher, ExportFilter())
    assert copied.count(b"\r\n") == 7 and b'"' not in copied and b"'" not in copied
