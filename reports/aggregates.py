"""Per-day aggregates of a model version's predictions: what the dashboard adds up instead of reading cells.

For each local day, the database groups the day's predictions (one per cell) by final label, predicted label,
flag and "reclassified"; bins every class's score into hundredths, split by whether the final label is that
class (the ROC curves); lists the day's cases; and counts latencies rounded to 0.01 ms (the percentiles).
Only these grouped rows reach Python.

Each day's aggregate is kept in `DailyMetrics`, so a 30-day dashboard reads 30 stored rows and aggregates
again only the days that changed (today, while cells arrive). A stored day is used only while it is fresh:
the same number of predictions (they are never edited, only added), no
cell of that day given a final label since it was computed (`CellImage.final_reviewed_at`, indexed, with a
margin for reviews still committing), and the same time zone. Otherwise it is computed again and replaced.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Count, F, Max, Q, QuerySet
from django.db.models.functions import Round, TruncDate
from django.utils import timezone

from cases.models import CellImage, Prediction
from inference.models import ModelVersion

from .models import DailyMetrics

ROC_BINS = 100
LATENCY_DECIMALS = 2
# A review's final_reviewed_at is set when it is written, before its transaction commits: a day computed
# within this margin after a review is computed again, in case the review was not yet visible.
REVIEW_COMMIT_MARGIN = dt.timedelta(minutes=2)

# Templates around a queryset's own compiled SQL ({cells}); every value is a query parameter.
# PostgreSQL: one row per class from the version's class list (the planner knows its length, so it hashes).
_POSTGRESQL_SCORE_BINS_SQL = (
    "SELECT cells.on_day, score.key, LEAST(GREATEST(floor((cells.scores ->> score.key)::float8 * %s)::int, 0), %s), "
    "score.key = cells.truth, count(*) "
    "FROM ({cells}) AS cells CROSS JOIN unnest(%s::text[]) AS score(key) GROUP BY 1, 2, 3, 4"
)
_PORTABLE_SCORE_BINS_SQL = (
    "SELECT cells.on_day, score.key, MIN(MAX(CAST(score.value * %s AS INTEGER), 0), %s), "
    "score.key = cells.truth, count(*) "
    "FROM ({cells}) AS cells, json_each(cells.scores) AS score GROUP BY 1, 2, 3, 4"
)


@dataclass
class DayAggregate:
    cells: int = 0
    groups: list = field(default_factory=list)  # [final_label, label, flagged, reclassified, cells]
    bins: dict[str, list[int]] = field(default_factory=dict)  # class -> ROC_BINS negatives, then ROC_BINS positives
    cases: list[int] = field(default_factory=list)
    latency: list = field(default_factory=list)  # [latency rounded to 0.01 ms, cells]

    def as_data(self) -> dict:
        return {"groups": self.groups, "bins": self.bins, "cases": self.cases, "latency": self.latency}

    @classmethod
    def from_row(cls, row: DailyMetrics) -> DayAggregate:
        return cls(cells=sum(group[-1] for group in row.data["groups"]), **row.data)


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def _day_ranges(days: list[dt.date]) -> Q:
    """Predictions made on any of the (local) days, as few created_at ranges as possible."""
    condition = Q(pk__in=[])
    ordered = sorted(days)
    for _, run in itertools.groupby(enumerate(ordered), key=lambda item: item[1].toordinal() - item[0]):
        run_days = [day for _, day in run]
        start = timezone.make_aware(dt.datetime.combine(run_days[0], dt.time.min))
        end = timezone.make_aware(dt.datetime.combine(run_days[-1] + dt.timedelta(days=1), dt.time.min))
        condition |= Q(created_at__gte=start, created_at__lt=end)
    return condition


def _compute(predictions: QuerySet[Prediction], days: list[dt.date], classes: list[str]) -> dict[dt.date, DayAggregate]:
    """Aggregate the predictions of the given days in the database."""
    if not days:
        return {}
    # Cells only: a field image holds cells and is never one itself (cases.CellImage.Kind).
    cells = predictions.filter(image__kind=CellImage.Kind.CELL)
    rows = cells.filter(_day_ranges(days)).annotate(on_day=TruncDate("created_at")).order_by()
    result: dict[dt.date, DayAggregate] = {}

    def day_of(value) -> DayAggregate:
        day = _as_date(value)
        if day not in result:
            result[day] = DayAggregate(bins={label: [0] * (2 * ROC_BINS) for label in classes})
        return result[day]

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")  # compiling these short queries costs more than it saves
                cursor.execute("SET LOCAL work_mem = '32MB'")  # group in memory
        groups = rows.values_list("on_day", "image__final_label", "label", "flagged", "image__reclassified")
        for on_day, final_label, label, flagged, reclassified, count in groups.annotate(n=Count("id")):
            aggregate = day_of(on_day)
            aggregate.cells += count
            aggregate.groups.append([final_label, label, bool(flagged), bool(reclassified), count])
        for on_day, case_id in rows.values_list("on_day", "image__case_id").distinct():
            day_of(on_day).cases.append(case_id)
        latencies = rows.annotate(ms=Round("latency_ms", LATENCY_DECIMALS)).values_list("on_day", "ms")
        for on_day, latency, count in latencies.annotate(n=Count("id")):
            day_of(on_day).latency.append([float(latency), count])
        scored = rows.filter(image__final_label__in=classes).values(
            scores=F("probabilities"), truth=F("image__final_label"), on_day=F("on_day")
        )
        sql, params = scored.query.sql_with_params()
        if connection.vendor == "postgresql":
            query, arguments = _POSTGRESQL_SCORE_BINS_SQL, (ROC_BINS, ROC_BINS - 1, *params, classes)
        else:
            query, arguments = _PORTABLE_SCORE_BINS_SQL, (ROC_BINS, ROC_BINS - 1, *params)
        with connection.cursor() as cursor:
            cursor.execute(query.replace("{cells}", sql), arguments)
            for on_day, label, score_bin, positive, count in cursor.fetchall():
                bins = day_of(on_day).bins.get(label)
                if bins is not None and score_bin is not None:
                    bins[int(score_bin) + (ROC_BINS if positive else 0)] += count
    for aggregate in result.values():
        aggregate.latency.sort()
    return result


# PostgreSQL: one count a day, each over its own range of the (model_version, created_at) index.
_POSTGRESQL_DAY_COUNTS_SQL = (
    "SELECT bounds.day, (SELECT count(*) FROM ({predictions}) AS prediction "
    "WHERE prediction.created_at >= bounds.day_start AND prediction.created_at < bounds.day_end) "
    "FROM unnest(%s::date[], %s::timestamptz[], %s::timestamptz[]) AS bounds(day, day_start, day_end)"
)


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def _live_counts(predictions: QuerySet[Prediction], days: list[dt.date] | None) -> dict[dt.date, int]:
    """The predictions of each (local) day that has any. Given the days, PostgreSQL counts each day's range of
    the index (an index-only count; grouping the whole period by TruncDate cost twice as much, a date computed
    for every prediction); otherwise they are grouped by day."""
    if days and connection.vendor == "postgresql":
        sql, params = predictions.order_by().values("created_at").query.sql_with_params()
        starts = [_day_start(day) for day in days]
        ends = [_day_start(day + dt.timedelta(days=1)) for day in days]
        with connection.cursor() as cursor:
            cursor.execute(_POSTGRESQL_DAY_COUNTS_SQL.replace("{predictions}", sql), (*params, days, starts, ends))
            return {_as_date(day): count for day, count in cursor.fetchall() if count}
    by_day = predictions.annotate(on_day=TruncDate("created_at")).order_by().values_list("on_day")
    # count(*): an index-only scan of the (model_version, created_at) index
    return {_as_date(day): count for day, count in by_day.annotate(n=Count("*"))}


def period_aggregates(
    *, model_version: ModelVersion, predictions: QuerySet[Prediction], days: list[dt.date] | None = None
) -> dict:
    """Aggregate of each day of the period that has predictions: stored ones while fresh, the others computed
    and stored. `days`, the period's days (the predictions must lie within them), lets PostgreSQL count each
    day's predictions faster."""
    classes = list(model_version.classes)
    time_zone = timezone.get_current_timezone_name()
    by_day = predictions.annotate(on_day=TruncDate("created_at")).order_by().values_list("on_day")
    live_counts = _live_counts(predictions, days)
    stored = {
        row.day: row
        for row in DailyMetrics.objects.filter(
            model_version=model_version, day__in=list(live_counts), time_zone=time_zone
        )
    }
    reviewed_since: dict[dt.date, dt.datetime] = {}
    if stored:
        since = min(row.computed_at for row in stored.values()) - REVIEW_COMMIT_MARGIN
        recent = by_day.filter(image__final_reviewed_at__gt=since).annotate(last=Max("image__final_reviewed_at"))
        reviewed_since = {_as_date(day): last for day, last in recent}
    fresh: dict[dt.date, DayAggregate] = {}
    for day, row in stored.items():
        last_review = reviewed_since.get(day)
        reviewed_after = last_review is not None and last_review > row.computed_at - REVIEW_COMMIT_MARGIN
        if row.predictions == live_counts[day] and not reviewed_after:
            fresh[day] = DayAggregate.from_row(row)
    computed_at = timezone.now()
    computed = _compute(predictions, [day for day in live_counts if day not in fresh], classes)
    closed = [
        DailyMetrics(
            model_version=model_version,
            day=day,
            time_zone=time_zone,
            predictions=live_counts[day],
            computed_at=computed_at,
            data=aggregate.as_data(),
        )
        for day, aggregate in computed.items()
    ]
    if closed:
        DailyMetrics.objects.bulk_create(
            closed,
            update_conflicts=True,
            unique_fields=["model_version", "day"],
            update_fields=["time_zone", "predictions", "computed_at", "data"],
        )
    return {**fresh, **computed}


def percentile(value_counts: list, fraction: float) -> float | None:
    """Linear-interpolation percentile (numpy's default) of a sorted [value, count] list."""
    total = sum(count for _, count in value_counts)
    if not total:
        return None
    cumulative = list(itertools.accumulate(count for _, count in value_counts))

    def value_at(rank: int) -> float:
        return value_counts[bisect.bisect_right(cumulative, rank)][0]

    rank = fraction * (total - 1)
    low = int(rank)
    lower = value_at(low)
    if rank == low:
        return float(lower)
    return float(lower + (rank - low) * (value_at(low + 1) - lower))
