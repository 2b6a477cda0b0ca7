import datetime as dt

import pytest

from cases.models import Prediction
from reports.selectors import NOT_REVIEWED, Period, dashboard_csv_rows, dashboard_metrics
from tests.factories import CellImageFactory, ModelVersionFactory, PredictionFactory

from .conftest import CLASSES, DAY_2, DAY_3, at_noon

PERIOD = Period(start=dt.date(2025, 3, 1), end=DAY_3)


@pytest.fixture
def metrics(scored_version):
    return dashboard_metrics(model_version=scored_version, period=PERIOD)


def by_class(metrics, label):
    return next(row for row in metrics.per_class if row.label == label)


def test_counts_cases_cells_and_reviewed_cells(metrics):
    assert (metrics.cases, metrics.cells, metrics.reviewed_cells) == (2, 6, 5)


def test_accuracy_against_final_labels(metrics):
    assert metrics.accuracy == pytest.approx(3 / 5)


def test_confusion_matrix_rows_are_final_labels(metrics):
    assert metrics.labels == CLASSES
    assert metrics.confusion == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]


@pytest.mark.parametrize(
    ("label", "precision", "recall", "f1"),
    [("neutrophil", 0.5, 1.0, 2 / 3), ("lymphocyte", 0.5, 0.5, 0.5), ("monocyte", 1.0, 0.5, 2 / 3)],
)
def test_per_class_precision_recall_f1(metrics, label, precision, recall, f1):
    row = by_class(metrics, label)
    assert (row.precision, row.recall, row.f1) == (pytest.approx(precision), pytest.approx(recall), pytest.approx(f1))


def test_roc_auc_per_class(metrics):
    auc = {curve.label: curve.auc for curve in metrics.roc}
    assert auc == {"neutrophil": pytest.approx(1.0), "lymphocyte": pytest.approx(5 / 6), "monocyte": pytest.approx(1.0)}


def test_roc_curve_points(metrics):
    neutrophil = next(curve for curve in metrics.roc if curve.label == "neutrophil")
    assert neutrophil.fpr == pytest.approx([0.0, 0.0, 0.25, 0.5, 1.0])
    assert neutrophil.tpr == pytest.approx([0.0, 1.0, 1.0, 1.0, 1.0])


def test_override_rate_counts_reclassified_reviewed_cells(metrics):
    assert metrics.override_rate == pytest.approx(2 / 5)


def test_flagged_rate_and_what_flagged_cells_turned_out_to_be(metrics):
    assert metrics.flagged_rate == pytest.approx(2 / 6)
    assert metrics.flagged_outcomes == {"monocyte": 1, NOT_REVIEWED: 1}


def test_latency_percentiles_interpolate_linearly(metrics):
    # Latencies 10..60: p50 halfway between 30 and 40; p95 at rank 4.75, i.e. 50 + 0.75 * 10.
    assert (metrics.latency_p50_ms, metrics.latency_p95_ms) == (pytest.approx(35.0), pytest.approx(57.5))


def test_cells_per_day_includes_empty_days(metrics):
    assert metrics.cells_per_day == [(dt.date(2025, 3, 1), 0), (DAY_2, 5), (DAY_3, 1)]


def test_period_excludes_predictions_outside_it(scored_version):
    metrics = dashboard_metrics(model_version=scored_version, period=Period(start=DAY_3, end=DAY_3))
    assert (metrics.cells, metrics.reviewed_cells, metrics.accuracy) == (1, 1, 0.0)


def test_other_model_versions_are_not_counted(scored_version):
    prediction = PredictionFactory(image=CellImageFactory(), model_version=ModelVersionFactory(classes=CLASSES))
    Prediction.objects.filter(pk=prediction.pk).update(created_at=at_noon(DAY_2))
    assert dashboard_metrics(model_version=scored_version, period=PERIOD).cells == 6


def test_an_empty_period_has_no_rates(scored_version):
    metrics = dashboard_metrics(
        model_version=scored_version,
        period=Period(start=DAY_3 + dt.timedelta(days=1), end=DAY_3 + dt.timedelta(days=1)),
    )
    assert (metrics.cells, metrics.accuracy, metrics.latency_p50_ms, metrics.flagged_rate) == (0, None, None, None)


def test_csv_rows_carry_the_same_numbers(metrics):
    rows = list(dashboard_csv_rows(metrics=metrics))
    assert rows[0] == ["section", "metric", "class", "predicted_class", "value"]
    assert ["summary", "accuracy", "", "", pytest.approx(0.6)] in rows
    assert ["confusion", "cells", "lymphocyte", "neutrophil", 1] in rows
    assert ["per_class", "recall", "monocyte", "", pytest.approx(0.5)] in rows
