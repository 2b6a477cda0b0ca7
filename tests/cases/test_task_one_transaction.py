"""A one-image task writes its cells and the case status they give the case in one transaction (the case lock's):
one BEGIN/COMMIT instead of two, and a failing status receiver leaves nothing half stored."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models.signals import post_save

from cases import classification, services
from cases.models import Case, CellImage, Prediction
from tests.cases.test_classification_queries import crop_answer, uploads


@pytest.fixture
def queued(monkeypatch):
    # The uploads' tasks are collected, not sent: the tests run them.
    sent = []
    monkeypatch.setattr(services, "enqueue_classification", lambda *, image_ids: sent.append(list(image_ids)))
    return sent


@pytest.mark.django_db(transaction=True)
def test_the_case_status_is_written_in_the_transaction_that_stores_the_cells(analysis, technician, queued, monkeypatch):
    analysis(crop_answer)
    (upload,) = uploads(technician, 1)
    inside = []
    refresh = classification.refresh_case_statuses

    def watched(*, case_ids):
        inside.append(connection.in_atomic_block)
        refresh(case_ids=case_ids)

    monkeypatch.setattr(classification, "refresh_case_statuses", watched)
    counts = classification.classify(image_ids=[upload.pk])

    assert counts["classified"] == 1
    assert inside == [True]
    assert Case.objects.get(pk=upload.case_id).status == Case.Status.AWAITING_REVIEW
    assert Prediction.objects.filter(image_id=upload.pk).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_failing_status_receiver_leaves_the_cells_unstored_for_another_attempt(analysis, technician, queued):
    analysis(crop_answer)
    (upload,) = uploads(technician, 1)

    def failing(sender, instance, **kwargs):
        raise RuntimeError("receiver down")

    post_save.connect(failing, sender=Case, weak=False)
    try:
        with pytest.raises(RuntimeError, match="receiver down"):
            classification.classify(image_ids=[upload.pk])
    finally:
        post_save.disconnect(failing, sender=Case)

    upload.refresh_from_db()
    assert upload.status == CellImage.Status.CLASSIFYING  # claimed: requeue_stale_images sends it again
    assert not Prediction.objects.filter(image_id=upload.pk).exists()
    assert Case.objects.get(pk=upload.case_id).status == Case.Status.CLASSIFYING

    # The next attempt stores it and moves the case on.
    assert classification.classify(image_ids=[upload.pk])["classified"] == 1
    assert Case.objects.get(pk=upload.case_id).status == Case.Status.AWAITING_REVIEW
