"""Case-level escalation (inference.case_review in cases.classification): when a case as a whole is imaged unlike
the training data, every cell of it is flagged "unvalidated_case" (keeping its label), those classified later
are stored flagged, and the batch that turns the warning on flags the earlier cells, audits it and tells the
pages watching the case.

The inference pipeline is replaced by the fake of test_field_uploads, so what is stored is known exactly."""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta

import pytest
from django import db
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from cases import classification, review_selectors, selectors, services, tasks
from cases.models import CellImage, Prediction
from tests.api.conftest import token_client
from tests.cases.test_field_uploads import crop_of, field_of, found, upload
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

ESCALATED = "unvalidated_case"


@pytest.fixture
def case(technician):
    return CaseFactory(created_by=technician)


def latest(image) -> Prediction:
    return Prediction.objects.filter(image=image).latest("created_at", "id")


def cells_of(reasons_per_cell):
    """A fake answer: a field with one neutrophil per entry of `reasons_per_cell`, each with those reasons."""
    boxes = [(60 * n, 0, 60 * n + 50, 50) for n in range(len(reasons_per_cell))]
    cells = list(zip(boxes, reasons_per_cell, strict=True))
    return lambda picture: field_of(picture, [found(box, reasons=reasons) for box, reasons in cells])


def clean_crop(picture):
    return crop_of(picture, [found((1, 1, 39, 29), label="lymphocyte")])


def classify(image):
    tasks.classify_images.apply(args=[[image.pk]])


def escalations():
    return AuditEvent.objects.filter(action=AuditEvent.Action.CASE_ESCALATED)


def test_every_cell_of_a_case_unlike_the_training_data_is_flagged_and_keeps_its_label(analysis, case, technician):
    # 3 of 10 (30 %, the rule's share) imaged unlike the training laboratories.
    analysis(cells_of([("unfamiliar_imaging",)] * 3 + [()] * 6 + [("low_confidence",)]))
    field = upload(case, technician)

    classify(field)

    predictions = [latest(cell) for cell in field.cells.order_by("pk")]
    assert len(predictions) == 10
    assert all(p.flagged and p.label == "neutrophil" for p in predictions)
    assert [p.flag_reasons for p in predictions] == (
        [["unfamiliar_imaging", ESCALATED]] * 3 + [[ESCALATED]] * 6 + [["low_confidence", ESCALATED]]
    )
    (event,) = escalations()
    assert (event.object_type, event.object_id, event.actor) == ("cases.case", str(case.pk), None)
    assert event.details == {"reason": ESCALATED, "earlier_cells_flagged": 0}
    assert selectors.model_validity(case=case).warn


def test_a_case_under_the_share_is_left_as_the_cells_were_classified(analysis, case, technician):
    # 2 of 7 (29 %): no warning, no escalation.
    analysis(cells_of([("unfamiliar_imaging",)] * 2 + [()] * 5))
    field = upload(case, technician)

    classify(field)

    predictions = [latest(cell) for cell in field.cells.order_by("pk")]
    assert [p.flagged for p in predictions] == [True] * 2 + [False] * 5
    assert not any(ESCALATED in p.flag_reasons for p in predictions)
    assert not escalations().exists()
    assert not selectors.model_validity(case=case).warn


def test_under_the_minimum_of_cells_nothing_is_escalated(analysis, case, technician):
    analysis(cells_of([("not_a_cell",), ("out_of_distribution",)]))
    field = upload(case, technician)

    classify(field)

    assert not any(ESCALATED in reasons for reasons in Prediction.objects.values_list("flag_reasons", flat=True))
    assert not escalations().exists()


def test_cells_classified_after_the_warning_are_stored_flagged_without_another_statement(analysis, case, technician):
    analysis(cells_of([("unfamiliar_imaging",)] * 3))
    classify(upload(case, technician))
    analysis(clean_crop)
    crop = upload(case, technician, name="later.png", colour=(10, 20, 30))

    with CaptureQueriesContext(connection) as queries:
        classify(crop)

    prediction = latest(crop)
    assert (prediction.label, prediction.flagged, prediction.flag_reasons) == ("lymphocyte", True, [ESCALATED])
    assert escalations().count() == 1  # the case was escalated once, by the first batch
    prediction_updates = f'UPDATE "{Prediction._meta.db_table}"'
    assert not [query for query in queries if query["sql"].startswith(prediction_updates)]


def test_the_batch_that_turns_the_warning_on_flags_the_earlier_cells_and_tells_the_pages(
    analysis, case, technician, monkeypatch, django_capture_on_commit_callbacks, client, pathologist
):
    analysis(clean_crop)
    earlier = [upload(case, technician, name=f"crop-{n}.png", colour=(n, 40, 50)) for n in range(3)]
    for crop in earlier:
        classify(crop)
    assert not any(latest(crop).flagged for crop in earlier)
    heard = []
    monkeypatch.setattr(
        classification.events,
        "publish_image_updates",
        lambda *, case_id, image_ids, model_warning=False: heard.append((case_id, sorted(image_ids), model_warning)),
    )
    analysis(cells_of([("unfamiliar_imaging",)] * 4))  # 4 of 7 cells unlike the training data
    field = upload(case, technician)

    with django_capture_on_commit_callbacks(execute=True):
        classify(field)

    earlier_ids = sorted(crop.pk for crop in earlier)
    for crop in earlier:
        prediction = latest(crop)
        assert (prediction.label, prediction.flagged, prediction.flag_reasons) == ("lymphocyte", True, [ESCALATED])
    # Announced after the commit, like the batch's own cells; both say the case is escalated (the page's banner).
    assert (case.pk, earlier_ids, True) in heard
    assert (case.pk, sorted([field.pk, *field.cells.values_list("pk", flat=True)]), True) in heard
    (event,) = escalations()
    assert event.details == {"reason": ESCALATED, "earlier_cells_flagged": 3}

    # What the event stream sends, the API and the review page say: flagged, keeping the label.
    pushed = {image["id"]: image for image in selectors.image_updates(case=case, image_ids=earlier_ids)["images"]}
    for crop_id in earlier_ids:
        assert pushed[crop_id]["prediction"]["flagged"] is True
        assert pushed[crop_id]["prediction"]["flag_reasons"] == [ESCALATED]
        assert pushed[crop_id]["prediction"]["label"] == "lymphocyte"
    api = token_client(pathologist).get(f"/api/v1/images/{earlier[0].pk}/").json()
    prediction = api.get("prediction") or api["predictions"][0]
    assert prediction["flagged"] is True and ESCALATED in prediction["flag_reasons"]
    groups = {group.key: group for group in review_selectors.review_gallery(case=case)}
    assert {cell.image.pk for cell in groups["flagged"].cells} >= set(earlier_ids)
    assert "lymphocyte" not in groups  # no cell of the case is taken as confidently classified
    client.force_login(pathologist)
    page = client.get(reverse("cases:review", args=[case.pk])).text
    assert "In a case imaged unlike the training laboratories" in page
    differential = client.get(reverse("cases:differential", args=[case.pk])).text
    assert "This model is not validated for images like these." in differential
    cards = client.get(reverse("cases:cards", args=[case.pk]) + f"?ids={earlier[0].pk}").text
    assert "in a case imaged unlike the training laboratories" in cards


def test_a_second_batch_of_an_escalated_case_does_not_audit_again(analysis, case, technician):
    analysis(cells_of([("unfamiliar_imaging",)] * 3))
    classify(upload(case, technician))
    classify(upload(case, technician, name="second.png", colour=(1, 2, 3)))

    assert escalations().count() == 1
    reasons = list(Prediction.objects.filter(image__case=case).values_list("flag_reasons", flat=True))
    assert len(reasons) == 6 and all(ESCALATED in cell_reasons for cell_reasons in reasons)


def test_the_events_say_the_case_is_escalated_only_once_it_is(
    analysis, case, technician, monkeypatch, django_capture_on_commit_callbacks
):
    heard = []
    monkeypatch.setattr(
        classification.events,
        "publish_image_updates",
        lambda *, case_id, image_ids, model_warning=False: heard.append(model_warning),
    )
    analysis(cells_of([("unfamiliar_imaging",)] * 2 + [()] * 5))  # 2 of 7: under the share
    with django_capture_on_commit_callbacks(execute=True):
        classify(upload(case, technician))
    assert heard == [False]

    analysis(cells_of([("unfamiliar_imaging",)] * 3))  # 5 of 10 now
    with django_capture_on_commit_callbacks(execute=True):
        classify(upload(case, technician, name="second.png", colour=(1, 2, 3)))
    assert heard[1:] == [True, True]  # the batch's own cells, then the earlier cells flagged

    analysis(clean_crop)
    with django_capture_on_commit_callbacks(execute=True):
        classify(upload(case, technician, name="third.png", colour=(4, 5, 6)))
    assert heard[3:] == [True]  # a case escalated stays escalated: no earlier cell to flag, still said


def test_the_cells_of_a_case_are_counted_by_their_newest_prediction_one_row_per_case(technician):
    first, second, empty = (CaseFactory(created_by=technician) for _ in range(3))
    old, new = ModelVersionFactory(), ModelVersionFactory()
    now = timezone.now()

    def cell(case, reasons, *, parent=None, earlier_reasons=None):
        image = CellImageFactory(case=case, parent=parent)
        if earlier_reasons is not None:
            PredictionFactory(image=image, model_version=old, flag_reasons=list(earlier_reasons))
            Prediction.objects.filter(image=image).update(created_at=now - timedelta(hours=1))
        PredictionFactory(image=image, model_version=new, flag_reasons=list(reasons))
        return image

    cell(first, ["unfamiliar_imaging", ESCALATED])
    cell(first, ["out_of_distribution"], earlier_reasons=[])
    cell(first, [], earlier_reasons=["not_a_cell"])  # its newest prediction says nothing unlike the training data
    cell(first, ["low_confidence", ESCALATED])
    CellImageFactory(case=first, status="queued")  # not classified yet: not counted
    field = CellImageFactory(case=second, kind=CellImage.Kind.FIELD)
    cell(second, ["not_a_cell"], parent=field)
    cell(second, ["not_a_cell"], parent=field)
    upload = cell(second, [])
    cell(second, ["low_confidence"])

    counts = selectors.case_cell_counts([first.pk, second.pk, empty.pk])
    assert counts == {
        first.pk: selectors.CaseCellCounts(classified=4, unlike_training=2, escalated=2),
        second.pk: selectors.CaseCellCounts(classified=4, unlike_training=2, escalated=0),
    }
    # A batch leaves out its own uploads and the cells found in them.
    assert selectors.case_cell_counts([second.pk], excluding=[field.pk, upload.pk]) == {
        second.pk: selectors.CaseCellCounts(classified=1, unlike_training=0, escalated=0)
    }
    # The database counts as the rows read one by one would.
    rows = selectors.case_cell_predictions([first.pk, second.pk])
    assert selectors._counted(rows, set()) == counts


def test_the_earlier_predictions_are_read_only_by_the_batch_that_turns_the_warning_on(
    analysis, case, technician, monkeypatch
):
    read = []
    reader = selectors.case_cell_predictions
    monkeypatch.setattr(selectors, "case_cell_predictions", lambda case_ids: read.append(case_ids) or reader(case_ids))
    analysis(clean_crop)
    for n in range(3):
        classify(upload(case, technician, name=f"crop-{n}.png", colour=(n, 40, 50)))
    assert read == []  # a case under the share: counted, never read

    analysis(cells_of([("unfamiliar_imaging",)] * 2))  # 2 of 5
    classify(upload(case, technician))
    assert read == [[case.pk]]
    assert all(ESCALATED in latest(image).flag_reasons for image in case.images.filter(kind="cell"))

    analysis(clean_crop)
    classify(upload(case, technician, name="later.png", colour=(9, 9, 9)))
    assert read == [[case.pk]]  # escalated already, every cell flagged: nothing to read


@pytest.mark.django_db(transaction=True)
def test_two_tasks_of_one_case_storing_at_once_leave_no_cell_unescalated(analysis, technician, monkeypatch):
    """Each task counts the case before the other stores (held at a barrier after counting): alone, each is under
    the rule's minimum of cells; together 2 of 4 cells are unlike the training data. With the case locked the
    second task waits, counts the first one's cells and escalates them with its own."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no row or advisory locks: its IMMEDIATE transactions serialise the tasks' writes whole")
    case = CaseFactory(created_by=technician)
    unlike_colour = (200, 10, 10)

    def answer(picture):
        reasons = ("unfamiliar_imaging",) if picture.getpixel((0, 0)) == unlike_colour else ()
        return cells_of([reasons] * 2)(picture)

    analysis(answer)
    queued = []
    monkeypatch.setattr(services, "enqueue_classification", lambda *, image_ids: queued.append(list(image_ids)))
    fields = [
        upload(case, technician, name="unlike.png", colour=unlike_colour),
        upload(case, technician, name="clean.png", colour=(230, 200, 200)),
    ]
    assert sorted(queued) == sorted([[field.pk] for field in fields])
    barrier = threading.Barrier(2)
    counter = selectors.case_cell_counts

    def counted_then_held(*args, **kwargs):
        counts = counter(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=3)  # the other task counts meanwhile, unless it is waiting for the case's lock
        return counts

    monkeypatch.setattr(selectors, "case_cell_counts", counted_then_held)
    errors = []

    def run(field):
        try:
            classify(field)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            db.connections.close_all()

    threads = [threading.Thread(target=run, args=(field,)) for field in fields]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    reasons = list(Prediction.objects.filter(image__case=case).values_list("flag_reasons", flat=True))
    assert len(reasons) == 4
    assert all(ESCALATED in cell_reasons for cell_reasons in reasons), reasons
    assert escalations().count() == 1


def test_the_pages_warning_reads_one_row_and_the_newest_prediction_of_each_cell(case):
    cells = [CellImageFactory(case=case) for _ in range(12)]
    for cell in cells[:4]:
        PredictionFactory(image=cell, flagged=True, flag_reasons=["out_of_distribution"])
    for cell in cells[4:]:
        PredictionFactory(image=cell)
    # Re-classified later: the newest prediction of the first two is no longer unlike the training data.
    later = timezone.now() + timedelta(minutes=5)
    for cell in cells[:2]:
        PredictionFactory(image=cell, created_at=later)

    with CaptureQueriesContext(connection) as queries:
        validity = selectors.model_validity(case=case)

    assert (validity.classified_cells, validity.unlike_training) == (12, 2)
    assert not validity.warn
    assert len(queries) == 1
