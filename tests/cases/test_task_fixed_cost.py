"""The classification task's fixed cost: the model look-up, the claim, the store of a batch of crops and the case
status refresh each take one statement, and still behave as before: a switch of model made elsewhere (another
process: here straight in the database) reaches the next task, stale claims are taken again, an upload another
delivery stored is left alone, and the case status receivers are told."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cases import classification
from cases.models import Case, CellImage, Prediction
from inference import predictor as predictor_module
from inference.models import ModelVersion
from inference.predictor import ModelUnavailable, get_serving_predictors
from inference.testing import build_tiny_model_version
from tests.cases.test_classification_queries import crop_answer, uploads
from tests.factories import CaseFactory, CellImageFactory, LaboratoryFactory


def test_both_predictors_come_from_one_query_while_nothing_changes(tiny_model):
    active, shadow = get_serving_predictors()
    assert active.version == tiny_model and shadow is None
    with CaptureQueriesContext(connection) as queries:
        again, shadow = get_serving_predictors()
    assert again is active and shadow is None
    assert len(queries) == 1


def test_a_switch_made_in_another_process_reaches_the_next_task(tiny_model):
    first, _ = get_serving_predictors()
    other = build_tiny_model_version(name="switched-elsewhere", seed=3, activate=False)
    # As another process would leave the database: no in-process hook ran.
    ModelVersion.objects.filter(pk=tiny_model.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=other.pk).update(is_active=True, activated_at=timezone.now())

    switched, _ = get_serving_predictors()
    assert switched.version.pk == other.pk and switched is not first

    # Back to the first version: activated again, so it is loaded again.
    ModelVersion.objects.filter(pk=other.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=tiny_model.pk).update(is_active=True, activated_at=timezone.now())
    assert get_serving_predictors()[0].version.pk == tiny_model.pk


def test_a_changed_checksum_of_the_active_version_is_checked_again(tiny_model):
    get_serving_predictors()
    ModelVersion.objects.filter(pk=tiny_model.pk).update(checksums={**tiny_model.checksums, "model.tflite": "0" * 64})
    with pytest.raises(ModelUnavailable, match="checksum mismatch"):
        get_serving_predictors()


def test_the_shadow_version_started_and_stopped_elsewhere_is_followed(tiny_model):
    candidate = build_tiny_model_version(name="shadow-elsewhere", seed=5, activate=False)
    ModelVersion.objects.filter(pk=candidate.pk).update(is_shadow=True, shadow_since=timezone.now())
    active, shadow = get_serving_predictors()
    assert active.version == tiny_model and shadow.version.pk == candidate.pk
    with CaptureQueriesContext(connection) as queries:
        assert get_serving_predictors() == (active, shadow)
    assert len(queries) == 1

    ModelVersion.objects.filter(pk=candidate.pk).update(is_shadow=False, shadow_since=None)
    assert get_serving_predictors() == (active, None)


def test_a_shadow_that_cannot_be_looked_up_leaves_the_active_path_alone(tiny_model, monkeypatch, caplog):
    candidate = build_tiny_model_version(name="shadow-broken-look-up", seed=6, activate=False)
    ModelVersion.objects.filter(pk=candidate.pk).update(is_shadow=True, shadow_since=timezone.now())

    def broken():
        raise RuntimeError("shadow look-up exploded")

    monkeypatch.setattr(predictor_module, "get_shadow_predictor", broken)
    active, shadow = get_serving_predictors()
    assert active.version == tiny_model and shadow is None
    assert "the shadow model version could not be looked up" in caplog.text


def test_the_claim_is_one_statement_and_takes_stale_claims_again(db, technician):
    laboratory = LaboratoryFactory(um_per_pixel=0.25)
    measured = CaseFactory(created_by=technician, laboratory=laboratory)
    unmeasured = CaseFactory(created_by=technician)
    queued = CellImageFactory(case=measured, status=CellImage.Status.QUEUED)
    stale = CellImageFactory(case=unmeasured, status=CellImage.Status.CLASSIFYING, attempts=1)
    done = CellImageFactory(case=measured, status=CellImage.Status.CLASSIFIED)
    failed = CellImageFactory(case=measured, status=CellImage.Status.FAILED, status_message="unreadable")

    with CaptureQueriesContext(connection) as queries:
        claimed = classification.claim_for_classification(image_ids=[failed.pk, done.pk, stale.pk, queued.pk])

    assert len(queries) == 1
    assert [image.pk for image in claimed] == [queued.pk, stale.pk]
    assert [image.laboratory_um_per_pixel for image in claimed] == [0.25, None]
    assert [(image.status, image.attempts) for image in claimed] == [
        (CellImage.Status.CLASSIFYING, 1),
        (CellImage.Status.CLASSIFYING, 2),
    ]
    assert claimed[0].storage_key == queued.storage_key and claimed[1].case_id == unmeasured.pk
    rows = dict(CellImage.objects.values_list("pk", "status"))
    assert rows[queued.pk] == rows[stale.pk] == CellImage.Status.CLASSIFYING
    assert rows[done.pk] == CellImage.Status.CLASSIFIED and rows[failed.pk] == CellImage.Status.FAILED
    assert CellImage.objects.get(pk=stale.pk).attempts == 2
    assert classification.claim_for_classification(image_ids=[done.pk]) == []


def test_the_status_refresh_is_one_update_and_tells_the_receivers(db, technician):
    finished = CaseFactory(created_by=technician, status=Case.Status.CLASSIFYING)
    CellImageFactory(case=finished, status=CellImage.Status.CLASSIFIED)
    emptied = CaseFactory(created_by=technician, status=Case.Status.CLASSIFYING)
    pending = CaseFactory(created_by=technician, status=Case.Status.AWAITING_REVIEW)
    CellImageFactory(case=pending, status=CellImage.Status.CLASSIFIED)
    CellImageFactory(case=pending, status=CellImage.Status.QUEUED)
    signed = CaseFactory(created_by=technician, status=Case.Status.CLASSIFYING)
    CellImageFactory(case=signed, status=CellImage.Status.QUEUED)
    Case.objects.filter(pk=signed.pk).update(status=Case.Status.SIGNED)  # no cell can be added once signed
    unchanged = CaseFactory(created_by=technician, status=Case.Status.AWAITING_REVIEW)
    CellImageFactory(case=unchanged, status=CellImage.Status.NO_CELL)
    before = dict(Case.objects.values_list("pk", "updated_at"))
    told = []

    def receiver(sender, instance, created, update_fields, **kwargs):
        told.append((instance.pk, instance.status, instance.accession_id, created, set(update_fields)))

    post_save.connect(receiver, sender=Case, weak=False)
    try:
        with CaptureQueriesContext(connection) as queries:
            classification.refresh_case_statuses(
                case_ids=[finished.pk, emptied.pk, pending.pk, signed.pk, unchanged.pk, finished.pk]
            )
    finally:
        post_save.disconnect(receiver, sender=Case)

    statuses = dict(Case.objects.values_list("pk", "status"))
    assert statuses == {
        finished.pk: Case.Status.AWAITING_REVIEW,
        emptied.pk: Case.Status.DRAFT,
        pending.pk: Case.Status.CLASSIFYING,
        signed.pk: Case.Status.SIGNED,
        unchanged.pk: Case.Status.AWAITING_REVIEW,
    }
    assert told == [
        (case.pk, statuses[case.pk], case.accession_id, False, {"status", "updated_at"})
        for case in (finished, emptied, pending)
    ]
    after = dict(Case.objects.values_list("pk", "updated_at"))
    assert after[signed.pk] == before[signed.pk] and after[unchanged.pk] == before[unchanged.pk]
    assert after[finished.pk] > before[finished.pk]
    writes = [query["sql"] for query in queries if "cases_case" in query["sql"] and "UPDATE" in query["sql"]]
    assert len(writes) == 1 and not [query for query in queries if "FOR UPDATE" in query["sql"]]


def test_a_crop_another_delivery_stored_meanwhile_is_left_as_it_stored_it(monkeypatch, tiny_model, technician):
    first, second = uploads(technician, 2)
    CellImage.objects.filter(pk__in=[first.pk, second.pk]).update(status=CellImage.Status.QUEUED)

    def analyse(pictures, *, um_per_pixel=None, predictor=None):
        # Another delivery of the task stores the first upload while this one analyses it.
        CellImage.objects.filter(pk=first.pk).update(status=CellImage.Status.CLASSIFIED, located_as="other")
        return [crop_answer(picture) for picture in pictures]

    monkeypatch.setattr(classification, "analyse_images", analyse)
    counts = classification.classify(image_ids=[first.pk, second.pk])

    assert counts["classified"] == 1
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.located_as == "other" and first.box_x0 is None  # not written again
    assert second.status == CellImage.Status.CLASSIFIED and second.box_x0 == 1
    assert list(Prediction.objects.values_list("image_id", flat=True)) == [second.pk]
