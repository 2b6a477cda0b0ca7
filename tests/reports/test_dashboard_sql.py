"""The dashboard's SQL aggregates equal a straightforward Python computation over the same cells.

A seeded fixture of cells with confirmations, overrides, amendments after sign-off, flagged cells, cells
nobody reviewed, a reviewer-only label and a cell of another model version outside the period. The expected
figures are computed here from the Review rows themselves (latest review per cell), independently of the
stored final label the dashboard reads.
"""

import datetime as dt
import random

import numpy as np
import pytest

from cases.models import Case, CellImage, Prediction, Review
from cases.review_services import amend_cells, review_cells, sign_case
from reports.selectors import NOT_REVIEWED, Period, dashboard_metrics
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

from .conftest import at_noon

CLASSES = ["neutrophil", "lymphocyte", "monocyte", "eosinophil"]
START = dt.date(2025, 5, 1)
PERIOD = Period(start=START, end=START + dt.timedelta(days=4))


def probabilities_for(rng: random.Random, predicted: str) -> dict[str, float]:
    # Scores at the middle of a hundredth, so the 100-bin ROC and the exact ROC below are the same curve.
    raw = {name: rng.randint(1, 30) for name in CLASSES}
    raw[predicted] = 100
    total = sum(raw.values())
    return {name: (min(int(value / total * 100), 99) + 0.5) / 100 for name, value in raw.items()}


@pytest.fixture
def fixture(db, pathologist):
    rng = random.Random(7)
    version = ModelVersionFactory(classes=CLASSES)
    cases = [CaseFactory(status=Case.Status.AWAITING_REVIEW) for _ in range(4)]
    for number in range(60):
        case = cases[number % 4]
        predicted = rng.choice(CLASSES)
        probabilities = probabilities_for(rng, predicted)
        prediction = PredictionFactory(
            image=CellImageFactory(case=case),
            model_version=version,
            label=predicted,
            confidence=probabilities[predicted],
            probabilities=probabilities,
            flagged=rng.random() < 0.2,
            latency_ms=float(rng.randint(2, 90)),
        )
        Prediction.objects.filter(pk=prediction.pk).update(created_at=at_noon(START + dt.timedelta(days=number % 5)))
        roll = rng.random()
        if roll < 0.15:
            continue  # nobody reviewed it
        if roll < 0.2:  # a reviewer-only label: not a model class, never a model error
            Review.objects.create(image=prediction.image, reviewer=pathologist, kind="override", to_label="smudge")
            continue
        target = predicted if roll < 0.7 else rng.choice([name for name in CLASSES if name != predicted])
        review_cells(case=case, image_ids=[prediction.image_id], reviewer=pathologist, to_label=target)
    # Two cases signed, then amended: the amendment becomes the final label.
    for case in cases[:2]:
        for image in case.images.filter(final_label=""):
            review_cells(case=case, image_ids=[image.pk], reviewer=pathologist)
        images = list(case.images.exclude(final_label="").exclude(final_label="smudge").order_by("pk"))
        sign_case(case=case, signer=pathologist)
        for image in images[:3]:
            new_label = next(name for name in CLASSES if name != image.final_label)
            amend_cells(case=case, image_ids=[image.pk], amender=pathologist, to_label=new_label, reason="second look")
    # Outside the period, and another version: neither is counted.
    PredictionFactory(model_version=version, label="neutrophil")
    Prediction.objects.filter(model_version=version, created_at__gt=at_noon(START + dt.timedelta(days=10))).update(
        created_at=at_noon(START - dt.timedelta(days=3))
    )
    PredictionFactory(image=CellImageFactory(case=cases[3]), model_version=ModelVersionFactory(classes=CLASSES))
    return version


def expected_figures(version) -> dict:
    """The dashboard, computed cell by cell in Python from the reviews."""
    predictions = list(
        Prediction.objects.filter(
            model_version=version, created_at__gte=PERIOD.start_at, created_at__lt=PERIOD.end_before
        ).select_related("image")
    )
    final, reclassified = {}, set()
    for review in Review.objects.order_by("created_at", "id"):
        final[review.image_id] = review.to_label
        if review.kind != "confirm":
            reclassified.add(review.image_id)
    reviewed = [p for p in predictions if p.image_id in final]
    scored = [p for p in reviewed if final[p.image_id] in CLASSES]
    others: dict[str, int] = {}
    for p in reviewed:
        if final[p.image_id] not in CLASSES:
            others[final[p.image_id]] = others.get(final[p.image_id], 0) + 1
    flagged_outcomes: dict[str, int] = {}
    for p in predictions:
        if p.flagged:
            outcome = final.get(p.image_id, NOT_REVIEWED)
            flagged_outcomes[outcome] = flagged_outcomes.get(outcome, 0) + 1
    confusion = [[0] * len(CLASSES) for _ in CLASSES]
    for p in scored:
        confusion[CLASSES.index(final[p.image_id])][CLASSES.index(p.label)] += 1
    per_class, auc = {}, {}
    for label in CLASSES:
        tp = sum(1 for p in scored if p.label == label and final[p.image_id] == label)
        predicted = sum(1 for p in scored if p.label == label)
        support = sum(1 for p in scored if final[p.image_id] == label)
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        f1 = None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        per_class[label] = (support, predicted, precision, recall, f1)
        positives = [p.probabilities[label] for p in scored if final[p.image_id] == label]
        negatives = [p.probabilities[label] for p in scored if final[p.image_id] != label]
        if positives and negatives:  # AUC = P(score of a positive > a negative), ties count half
            wins = sum((a > b) + 0.5 * (a == b) for a in positives for b in negatives)
            auc[label] = wins / (len(positives) * len(negatives))
    return {
        "cells": len(predictions),
        "cases": len({p.image.case_id for p in predictions}),
        "reviewed": len(reviewed),
        "scored": len(scored),
        "other_labels": others,
        "accuracy": sum(1 for p in scored if p.label == final[p.image_id]) / len(scored),
        "override_rate": sum(1 for p in scored if p.image_id in reclassified) / len(scored),
        "flagged_cells": sum(1 for p in predictions if p.flagged),
        "flagged_outcomes": flagged_outcomes,
        "confusion": confusion,
        "per_class": per_class,
        "auc": auc,
        "latency": tuple(float(np.percentile([p.latency_ms for p in predictions], q)) for q in (50, 95)),
        "per_day": [(day, sum(1 for p in predictions if p.created_at.date() == day)) for day in PERIOD.days],
    }


def test_the_fixture_has_every_kind_of_cell(fixture):
    kinds = set(Review.objects.values_list("kind", flat=True))
    assert kinds == {"confirm", "override", "amendment"}
    assert CellImage.objects.filter(final_label="smudge").exists()
    assert CellImage.objects.filter(final_label="").exists()
    assert Prediction.objects.filter(flagged=True).exists()


def test_sql_metrics_equal_the_python_computation(fixture):
    metrics = dashboard_metrics(model_version=fixture, period=PERIOD)
    expected = expected_figures(fixture)
    assert (metrics.cells, metrics.cases, metrics.reviewed_cells, metrics.scored_cells) == (
        expected["cells"],
        expected["cases"],
        expected["reviewed"],
        expected["scored"],
    )
    assert metrics.other_labels == expected["other_labels"]
    assert metrics.accuracy == pytest.approx(expected["accuracy"])
    assert metrics.override_rate == pytest.approx(expected["override_rate"])
    assert metrics.flagged_cells == expected["flagged_cells"]
    assert metrics.flagged_outcomes == expected["flagged_outcomes"]
    assert metrics.labels == CLASSES
    assert metrics.confusion == expected["confusion"]
    for row in metrics.per_class:
        support, predicted, precision, recall, f1 = expected["per_class"][row.label]
        assert (row.support, row.predicted) == (support, predicted)
        assert (row.precision, row.recall, row.f1) == (
            pytest.approx(precision),
            pytest.approx(recall),
            pytest.approx(f1),
        )
    assert {curve.label: curve.auc for curve in metrics.roc} == pytest.approx(expected["auc"])
    assert (metrics.latency_p50_ms, metrics.latency_p95_ms) == pytest.approx(expected["latency"])
    assert metrics.cells_per_day == expected["per_day"]


def test_a_reviewer_only_label_is_not_a_model_error(fixture, pathologist):
    before = dashboard_metrics(model_version=fixture, period=PERIOD)
    image = (
        CellImage.objects.filter(final_label="", predictions__model_version=fixture)
        .exclude(case__status=Case.Status.SIGNED)
        .first()
    )
    Review.objects.create(image=image, reviewer=pathologist, kind="override", to_label="artefact")
    after = dashboard_metrics(model_version=fixture, period=PERIOD)
    assert after.reviewed_cells == before.reviewed_cells + 1
    assert (after.scored_cells, after.accuracy, after.confusion) == (
        before.scored_cells,
        before.accuracy,
        before.confusion,
    )
    assert after.other_labels["artefact"] == before.other_labels.get("artefact", 0) + 1


def test_only_cells_are_counted_never_a_field_image(fixture, researcher):
    from reports.selectors import ExportFilter
    from reports.services import export_cells

    before = dashboard_metrics(model_version=fixture, period=PERIOD)
    rows_before = len(list(export_cells(actor=researcher, export_filter=ExportFilter(model_version=fixture))))
    field = CellImageFactory(kind=CellImage.Kind.FIELD)
    prediction = PredictionFactory(image=field, model_version=fixture, label="neutrophil")
    Prediction.objects.filter(pk=prediction.pk).update(created_at=at_noon(START))
    after = dashboard_metrics(model_version=fixture, period=PERIOD)
    rows_after = len(list(export_cells(actor=researcher, export_filter=ExportFilter(model_version=fixture))))
    assert (after.cells, after.cases) == (before.cells, before.cases)
    assert rows_after == rows_before
