"""Closed days' aggregates are stored and reused while fresh, and computed again as soon as they are not."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cases.models import CellImage, Prediction
from cases.review_services import review_cells
from reports.aggregates import REVIEW_COMMIT_MARGIN, percentile
from reports.models import DailyMetrics
from reports.selectors import Period, dashboard_metrics
from tests.factories import CellImageFactory, PredictionFactory

from .conftest import CELLS as CELLS_OF_FIXTURE
from .conftest import CLASSES, DAY_2, DAY_3, at_noon

PERIOD = Period(start=dt.date(2025, 3, 1), end=DAY_3)


def age_stored_days():
    """As if the reviews had been given two hours ago and the stored days computed one hour ago."""
    CellImage.objects.exclude(final_reviewed_at=None).update(final_reviewed_at=timezone.now() - dt.timedelta(hours=2))
    DailyMetrics.objects.update(computed_at=timezone.now() - dt.timedelta(hours=1))


def test_closed_days_are_stored_and_reused(scored_version):
    first = dashboard_metrics(model_version=scored_version, period=PERIOD)
    assert sorted(DailyMetrics.objects.values_list("day", "predictions")) == [(DAY_2, 5), (DAY_3, 1)]
    age_stored_days()
    with CaptureQueriesContext(connection) as queries:
        again = dashboard_metrics(model_version=scored_version, period=PERIOD)
    assert not [
        query for query in queries.captured_queries if "jsonb_each" in query["sql"] or "json_each" in query["sql"]
    ]
    assert (again.accuracy, again.confusion, again.roc, again.latency_p95_ms) == (
        first.accuracy,
        first.confusion,
        first.roc,
        first.latency_p95_ms,
    )


def test_a_review_after_the_day_was_stored_is_counted(scored_version, pathologist):
    before = dashboard_metrics(model_version=scored_version, period=PERIOD)
    age_stored_days()
    unreviewed = CellImage.objects.get(final_label="", predictions__model_version=scored_version)
    review_cells(case=unreviewed.case, image_ids=[unreviewed.pk], reviewer=pathologist, to_label="lymphocyte")
    after = dashboard_metrics(model_version=scored_version, period=PERIOD)
    assert (before.reviewed_cells, after.reviewed_cells) == (5, 6)
    assert DailyMetrics.objects.get(day=DAY_2).computed_at > timezone.now() - REVIEW_COMMIT_MARGIN


def test_a_prediction_added_to_a_stored_day_is_counted(scored_version):
    dashboard_metrics(model_version=scored_version, period=PERIOD)
    age_stored_days()
    late = PredictionFactory(image=CellImageFactory(), model_version=scored_version, label="monocyte")
    Prediction.objects.filter(pk=late.pk).update(created_at=at_noon(DAY_3))
    assert dashboard_metrics(model_version=scored_version, period=PERIOD).cells_per_day[-1] == (DAY_3, 2)


def test_today_is_stored_and_computed_again_when_a_cell_arrives(db, scored_version):
    PredictionFactory(image=CellImageFactory(), model_version=scored_version, label="monocyte")
    today = timezone.localdate()
    period = Period(start=today, end=today)
    assert dashboard_metrics(model_version=scored_version, period=period).cells == 1
    assert DailyMetrics.objects.get(day=today).predictions == 1
    PredictionFactory(image=CellImageFactory(), model_version=scored_version, label="neutrophil")
    assert dashboard_metrics(model_version=scored_version, period=period).cells == 2


def test_another_time_zone_computes_the_days_again(scored_version, settings):
    dashboard_metrics(model_version=scored_version, period=PERIOD)
    age_stored_days()
    with timezone.override("Pacific/Kiritimati"):  # UTC+14: noon UTC is already the next day
        metrics = dashboard_metrics(
            model_version=scored_version, period=Period(start=DAY_2, end=DAY_3 + dt.timedelta(1))
        )
    assert [count for _, count in metrics.cells_per_day] == [0, 5, 1]
    stored = {row.day: (row.time_zone, row.predictions) for row in DailyMetrics.objects.all()}
    assert stored[DAY_3] == ("Pacific/Kiritimati", 5)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.95, 1.0])
def test_percentile_of_counted_values_matches_numpy(fraction):
    import numpy as np

    values = [2.5, 2.5, 3.0, 7.25, 7.25, 7.25, 9.0, 12.0]
    counted = sorted({value: values.count(value) for value in values}.items())
    assert percentile(counted, fraction) == pytest.approx(float(np.percentile(values, fraction * 100)))


def test_classes_of_the_fixture_are_the_versions(scored_version):
    assert scored_version.classes == CLASSES


@pytest.mark.parametrize("time_zone", ["UTC", "America/Bogota", "Asia/Kolkata", "Europe/Madrid"])
def test_counting_each_days_range_gives_the_counts_of_grouping_by_day(scored_version, time_zone):
    """The per-day counts PostgreSQL makes (one range of the index a day) are those of grouping by TruncDate,
    for predictions on either side of local midnights and on a day without any."""
    from reports.aggregates import _live_counts

    days = [dt.date(2025, 3, 1) + dt.timedelta(days=offset) for offset in range(5)]
    around_midnights = [
        timezone.make_aware(dt.datetime(2025, 3, 3, hour, minute), dt.UTC) for hour, minute in ((0, 0), (5, 29))
    ]
    around_midnights += [timezone.make_aware(dt.datetime(2025, 3, 4, 23, 59), dt.UTC)]
    for moment in around_midnights:
        prediction = PredictionFactory(image=CellImageFactory(), model_version=scored_version)
        Prediction.objects.filter(pk=prediction.pk).update(created_at=moment)
    with timezone.override(time_zone):
        period = Period(start=days[0], end=days[-1])
        predictions = Prediction.objects.filter(
            model_version=scored_version, created_at__gte=period.start_at, created_at__lt=period.end_before
        )
        grouped = _live_counts(predictions, None)
        per_day = _live_counts(predictions, days)
    assert per_day == grouped
    assert sum(grouped.values()) == len(CELLS_OF_FIXTURE) + 3
