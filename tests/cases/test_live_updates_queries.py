"""The event stream's per-wake read (cases.views_live._updates -> selectors.image_updates): the payload of
docs/events.md, read in a fixed, small number of queries whatever the number of images."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.fields import DateTimeField

from cases import selectors
from cases.models import Case, CellImage, Prediction
from cases.views_live import _updates
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

pytestmark = pytest.mark.django_db


def iso(value) -> str:
    """A time as the API's image GET writes it."""
    return DateTimeField().to_representation(value)


def payload_of(event: bytes) -> dict:
    name, data = event.decode().strip().split("\n")
    assert name == "event: images"
    return json.loads(data.removeprefix("data: "))


@pytest.fixture
def case_with_images():
    case = CaseFactory(status=Case.Status.CLASSIFYING)
    relabelled = CellImageFactory(case=case, status=CellImage.Status.CLASSIFIED)
    older_version, newer_version = ModelVersionFactory(name="older-model"), ModelVersionFactory(name="newer-model")
    # The later row is the earlier prediction: "latest" is by time, then id.
    latest = PredictionFactory(
        image=relabelled, model_version=newer_version, label="lymphocyte", confidence=0.87654321, ood_score=None
    )
    earlier = PredictionFactory(image=relabelled, model_version=older_version, label="monocyte", confidence=0.5)
    Prediction.objects.filter(pk=earlier.pk).update(created_at=latest.created_at - timedelta(minutes=1))
    flagged = CellImageFactory(case=case, status=CellImage.Status.CLASSIFIED)
    PredictionFactory(
        image=flagged,
        model_version=older_version,
        label="basophil",
        confidence=0.3,
        flagged=True,
        ood_score=2.5,
        flag_reasons=["low_confidence", "out_of_distribution"],
    )
    failed = CellImageFactory(case=case, status=CellImage.Status.FAILED, status_message="decoder crashed")
    queued = CellImageFactory(case=case, status=CellImage.Status.QUEUED)
    CellImageFactory(case=case, status=CellImage.Status.CLASSIFYING, status_changed_at=timezone.now())
    elsewhere = CellImageFactory(case=CaseFactory(), status=CellImage.Status.QUEUED)
    return case, {"relabelled": relabelled, "flagged": flagged, "failed": failed, "queued": queued}, elsewhere


def test_the_payload_is_that_of_docs_events_md(case_with_images):
    case, images, elsewhere = case_with_images
    asked = {image.pk for image in images.values()} | {elsewhere.pk}
    payload = payload_of(_updates(case, asked))
    assert payload["case"] == {"id": case.pk, "status": "classifying", "pending": 2}
    by_id = {image["id"]: image for image in payload["images"]}
    assert [image["id"] for image in payload["images"]] == sorted(image.pk for image in images.values())
    relabelled = images["relabelled"]
    latest = relabelled.predictions.order_by("-created_at").first()
    assert by_id[relabelled.pk] == {
        "id": relabelled.pk,
        "status": "classified",
        "status_message": "",
        "prediction": {
            "label": "lymphocyte",
            "confidence": 0.8765,
            "flagged": False,
            "ood_score": None,
            "model_version": "newer-model",
            "flag_reasons": [],
            "created_at": iso(latest.created_at),
        },
        "uploaded_at": iso(relabelled.uploaded_at),
        "kind": "cell",
        "parent": None,
        "cell_count": None,
    }
    flagged_prediction = by_id[images["flagged"].pk]["prediction"]
    assert flagged_prediction == {
        "label": "basophil",
        "confidence": 0.3,
        "flagged": True,
        "ood_score": 2.5,
        "model_version": "older-model",
        "flag_reasons": ["low_confidence", "out_of_distribution"],
        "created_at": flagged_prediction["created_at"],
    }
    assert by_id[images["failed"].pk] == {
        "id": images["failed"].pk,
        "status": "failed",
        "status_message": "decoder crashed",
        "prediction": None,
        "uploaded_at": iso(images["failed"].uploaded_at),
        "kind": "cell",
        "parent": None,
        "cell_count": None,
    }
    assert by_id[images["queued"].pk]["prediction"] is None


def test_a_case_without_the_asked_images_still_says_its_status(case_with_images):
    case, _, elsewhere = case_with_images
    assert selectors.image_updates(case=case, image_ids={elsewhere.pk}) == {
        "case": {"id": case.pk, "status": "classifying", "pending": 2},
        "images": [],
    }


@pytest.mark.parametrize("extra_images", [0, 20])
def test_a_wake_reads_in_one_query_however_many_images(case_with_images, extra_images):
    case, images, _ = case_with_images
    more = [CellImageFactory(case=case, status=CellImage.Status.CLASSIFIED) for _ in range(extra_images)]
    for image in more:
        PredictionFactory(image=image)
    with CaptureQueriesContext(connection) as queries:
        payload = payload_of(_updates(case, {image.pk for image in [*images.values(), *more]}))
    assert len(payload["images"]) == len(images) + extra_images
    assert len(queries) == 1


def test_a_case_with_nothing_pending_says_zero_in_one_query():
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    image = CellImageFactory(case=case, status=CellImage.Status.CLASSIFIED)
    PredictionFactory(image=image)
    with CaptureQueriesContext(connection) as queries:
        payload = selectors.image_updates(case=case, image_ids={image.pk})
    assert payload["case"] == {"id": case.pk, "status": "awaiting_review", "pending": 0}
    assert [item["id"] for item in payload["images"]] == [image.pk]
    assert len(queries) == 1


def test_a_field_says_how_many_cells_it_has_and_its_cells_say_their_field_in_the_same_query():
    case = CaseFactory(status=Case.Status.CLASSIFYING)
    field = CellImageFactory(case=case, kind=CellImage.Kind.FIELD, status=CellImage.Status.CLASSIFIED)
    cells = [CellImageFactory(case=case, parent=field, status=CellImage.Status.CLASSIFIED) for _ in range(3)]
    for cell in cells:
        PredictionFactory(image=cell)
    empty_field = CellImageFactory(case=case, kind=CellImage.Kind.FIELD, status=CellImage.Status.CLASSIFIED)
    with CaptureQueriesContext(connection) as queries:
        payload = selectors.image_updates(case=case, image_ids={field.pk, empty_field.pk, *(c.pk for c in cells)})
    assert len(queries) == 1
    by_id = {image["id"]: image for image in payload["images"]}
    assert (by_id[field.pk]["kind"], by_id[field.pk]["parent"], by_id[field.pk]["cell_count"]) == ("field", None, 3)
    assert by_id[field.pk]["prediction"] is None
    assert by_id[empty_field.pk]["cell_count"] == 0
    assert {(by_id[c.pk]["parent"], by_id[c.pk]["cell_count"]) for c in cells} == {(field.pk, None)}


def test_the_event_says_what_the_image_get_says_once_it_is_classified(case_with_images):
    """An API client that listens needs no GET: the label, flag, reasons and both times are the GET's."""
    from cases.serializers import CellImageSerializer

    case, images, _ = case_with_images
    for image in (images["relabelled"], images["flagged"]):
        (event,) = selectors.image_updates(case=case, image_ids={image.pk})["images"]
        got = CellImageSerializer(CellImage.objects.get(pk=image.pk)).data
        latest = got["predictions"][0]
        assert (event["status"], event["uploaded_at"], event["kind"], event["parent"]) == (
            got["status"],
            got["uploaded_at"],
            got["kind"],
            got["parent"],
        )
        assert {key: event["prediction"][key] for key in ("label", "flagged", "flag_reasons", "created_at")} == {
            key: latest[key] for key in ("label", "flagged", "flag_reasons", "created_at")
        }
        assert event["prediction"]["model_version"] == latest["model_version"]


@pytest.mark.parametrize("how_many", [1, 3, 4, 20])
def test_the_sql_built_once_reads_what_the_orm_reads(how_many):
    """On PostgreSQL the event's query is compiled once per number of ids (padded to a power of two) and
    then only executed: its rows are the queryset's, datetimes and JSON included."""
    if connection.vendor != "postgresql":
        # image_updates reads through the ORM elsewhere: SQLite's cursor gives naive datetimes, the ORM aware ones.
        pytest.skip("the precompiled read is used on PostgreSQL only")
    case = CaseFactory(status=Case.Status.CLASSIFYING)
    field = CellImageFactory(case=case, kind=CellImage.Kind.FIELD)
    images = [CellImageFactory(case=case, parent=field if n % 2 else None) for n in range(how_many)]
    for n, image in enumerate(images):
        PredictionFactory(image=image, flagged=bool(n % 2), flag_reasons=["low_confidence"] if n % 2 else [])
    CellImageFactory(case=case, status=CellImage.Status.QUEUED)
    ids = sorted(image.pk for image in images) + ([field.pk] if how_many > 1 else [])
    selectors._image_update_sql.clear()

    orm_rows = list(selectors._image_update_rows(case.pk, ids))
    with CaptureQueriesContext(connection) as queries:
        first = selectors._image_update_rows_precompiled(case.pk, ids)
        second = selectors._image_update_rows_precompiled(case.pk, ids)
    assert first == second == orm_rows
    assert len(queries) == 2
    assert list(selectors._image_update_sql) == [("default", 1 << (len(ids) - 1).bit_length())]
    assert [row[2] for row in first] == sorted(ids)
    assert all(isinstance(row[selectors._FLAG_REASONS_COLUMN], list) for row in first if row[2] != field.pk)


def test_the_sql_built_once_is_for_its_case_only():
    first_case, second_case = CaseFactory(), CaseFactory()
    mine = CellImageFactory(case=first_case)
    theirs = CellImageFactory(case=second_case)
    selectors.image_updates(case=first_case, image_ids={mine.pk})
    assert selectors.image_updates(case=second_case, image_ids={mine.pk})["images"] == []
    assert [image["id"] for image in selectors.image_updates(case=second_case, image_ids={theirs.pk})["images"]] == [
        theirs.pk
    ]
