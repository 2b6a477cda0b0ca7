"""A cell's final label is stored on the cell by every review path, in the review's own transaction."""

from unittest import mock

import pytest
from django.db import connection
from django.urls import reverse

from cases.final_labels import backfill_final_labels
from cases.models import Case, CellImage, Review
from cases.review_selectors import cells_for_review, critical_case_ids
from cases.review_services import amend_cells, review_cells, sign_case
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory


@pytest.fixture
def case(db):
    version = ModelVersionFactory()
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    for label in ["neutrophil", "lymphocyte", "monocyte"]:
        PredictionFactory(image=CellImageFactory(case=case), model_version=version, label=label)
    return case


def stored(case) -> dict[int, tuple[str, bool]]:
    return {image.pk: (image.final_label, image.reclassified) for image in case.images.order_by("pk")}


def cell_ids(case) -> list[int]:
    return list(case.images.order_by("pk").values_list("pk", flat=True))


def test_a_cell_nobody_reviewed_has_no_final_label(case):
    assert set(stored(case).values()) == {("", False)}
    assert not any(cell.is_reviewed for cell in cells_for_review(case=case))


def test_confirming_stores_the_predicted_label_and_when(case, pathologist):
    first = cell_ids(case)[0]
    (review,) = review_cells(case=case, image_ids=[first], reviewer=pathologist)
    image = CellImage.objects.get(pk=first)
    assert (image.final_label, image.final_reviewed_at, image.reclassified) == ("neutrophil", review.created_at, False)


def test_overriding_stores_the_new_label_and_marks_it_reclassified(case, pathologist):
    first, second, _ = cell_ids(case)
    review_cells(case=case, image_ids=[first, second], reviewer=pathologist, to_label="eosinophil")
    assert list(stored(case).values()) == [("eosinophil", True), ("eosinophil", True), ("", False)]


def test_confirming_after_an_override_keeps_it_reclassified(case, pathologist):
    first = cell_ids(case)[0]
    review_cells(case=case, image_ids=[first], reviewer=pathologist, to_label="eosinophil")
    review_cells(case=case, image_ids=[first], reviewer=pathologist)
    assert stored(case)[first] == ("eosinophil", True)


def test_an_amendment_after_sign_off_becomes_the_final_label(case, pathologist):
    review_cells(case=case, image_ids=cell_ids(case), reviewer=pathologist)
    sign_case(case=case, signer=pathologist)
    first = cell_ids(case)[0]
    (review,) = amend_cells(case=case, image_ids=[first], amender=pathologist, to_label="basophil", reason="re-read")
    image = CellImage.objects.get(pk=first)
    assert (image.final_label, image.final_reviewed_at, image.reclassified) == ("basophil", review.created_at, True)
    assert [cell.final_label for cell in cells_for_review(case=case)] == ["basophil", "lymphocyte", "monocyte"]


def test_a_review_saved_directly_keeps_it_too(case, pathologist):
    first = cell_ids(case)[0]
    Review.objects.create(image_id=first, reviewer=pathologist, kind=Review.Kind.OVERRIDE, to_label="smudge")
    assert stored(case)[first] == ("smudge", True)


def test_the_review_api_keeps_it(case, pathologist, client):
    client.force_login(pathologist)
    first = cell_ids(case)[0]
    response = client.post(
        reverse("api-case-reviews", args=[case.pk]),
        {"cells": [first], "to_label": "eosinophil"},
        content_type="application/json",
    )
    assert response.status_code in (200, 201), response.content
    assert stored(case)[first] == ("eosinophil", True)


def test_the_review_and_the_stored_label_commit_together(case, pathologist):
    first = cell_ids(case)[0]
    with mock.patch("cases.final_labels.keep_final_label", side_effect=RuntimeError("disk full")) as keep:
        with pytest.raises(RuntimeError, match="disk full"):
            review_cells(case=case, image_ids=[first], reviewer=pathologist)
    assert keep.call_count == 1
    assert not Review.objects.filter(image_id=first).exists()
    assert stored(case)[first] == ("", False)


def test_critical_cases_are_found_from_final_labels(case, pathologist):
    other = CaseFactory()
    first = cell_ids(case)[0]
    Review.objects.create(image_id=first, reviewer=pathologist, kind=Review.Kind.OVERRIDE, to_label="abnormal")
    assert critical_case_ids(case_ids=[case.pk, other.pk]) == {case.pk}
    Review.objects.create(image_id=first, reviewer=pathologist, kind=Review.Kind.OVERRIDE, to_label="monocyte")
    assert critical_case_ids(case_ids=[case.pk, other.pk]) == set()


def test_backfill_derives_the_stored_label_from_the_reviews(case, pathologist):
    first, second, third = cell_ids(case)
    review_cells(case=case, image_ids=[first], reviewer=pathologist, to_label="eosinophil")
    review_cells(case=case, image_ids=[first, second], reviewer=pathologist)
    expected = {
        pk: (label, reviewed_at)
        for pk, label, reviewed_at in case.images.values_list("pk", "final_label", "final_reviewed_at")
    }
    CellImage.objects.filter(case=case).update(final_label="", final_reviewed_at=None, reclassified=False)
    backfill_final_labels(connection)
    assert stored(case) == {first: ("eosinophil", True), second: ("lymphocyte", False), third: ("", False)}
    assert {
        pk: (label, at) for pk, label, at in case.images.values_list("pk", "final_label", "final_reviewed_at")
    } == expected
