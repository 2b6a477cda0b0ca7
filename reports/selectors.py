"""Reads for supervisors, researchers and admins: model performance, export rows, audit trail, errors.

Metrics are aggregated in the database from predictions and each cell's stored final label
(cases.final_labels); only grouped counts reach Python. The web process never imports scikit-learn or
TensorFlow.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext

from audit.models import AuditEvent
from cases.models import CellImage, Prediction, Review
from inference.models import ModelVersion
from inference.registry import get_active_version

from .aggregates import ROC_BINS, percentile, period_aggregates

DEFAULT_PERIOD_DAYS = 30
NOT_REVIEWED = "not reviewed yet"


@dataclass(frozen=True)
class Period:
    """Whole local days, both ends included."""

    start: dt.date
    end: dt.date

    @property
    def start_at(self) -> dt.datetime:
        return timezone.make_aware(dt.datetime.combine(self.start, dt.time.min))

    @property
    def end_before(self) -> dt.datetime:
        return timezone.make_aware(dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time.min))

    @property
    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=offset) for offset in range((self.end - self.start).days + 1)]


def default_period(*, today: dt.date | None = None) -> Period:
    today = today or timezone.localdate()
    return Period(start=today - dt.timedelta(days=DEFAULT_PERIOD_DAYS - 1), end=today)


MAX_PERIOD_DAYS = 3660


def period_problem(*, start: dt.date | None, end: dt.date | None) -> str:
    """Why a requested period is unusable, or an empty string."""
    if start and end and end < start:
        return gettext("The end date is before the start date.")
    if start and end and (end - start).days >= MAX_PERIOD_DAYS:
        return gettext("Choose a period of at most %(days)d days.") % {"days": MAX_PERIOD_DAYS}
    return ""


def resolve_period(*, start: dt.date | None, end: dt.date | None, required: bool) -> Period | None:
    """Fill in a missing end (today, or the start if later) or start (DEFAULT_PERIOD_DAYS before the end);
    with neither, the default period when one is required."""
    if not start and not end:
        return default_period() if required else None
    if not end:
        end = max(start, timezone.localdate())
    if not start:
        start = end - dt.timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    return Period(start=start, end=end)


def dashboard_versions() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.order_by("-is_active", "-created_at")


def default_dashboard_version() -> ModelVersion | None:
    return get_active_version() or ModelVersion.objects.order_by("-created_at").first()


@dataclass(frozen=True)
class ClassMetrics:
    label: str
    support: int  # reviewed cells whose final label is this class
    predicted: int  # reviewed cells the model gave this class
    precision: float | None  # None where the model never predicted the class
    recall: float | None  # None where no reviewed cell has the class
    f1: float | None


@dataclass(frozen=True)
class RocCurve:
    label: str
    fpr: list[float]
    tpr: list[float]
    auc: float


@dataclass
class DashboardMetrics:
    model_version: ModelVersion
    period: Period
    cases: int = 0
    cells: int = 0
    reviewed_cells: int = 0  # cells with a final label
    # Reviewed cells whose final label is one of the version's classes: what accuracy, precision, recall,
    # F1, the confusion matrix, ROC and the override rate are computed on.
    scored_cells: int = 0
    # Reviewed cells whose final label the model does not have (reviewer-only labels such as smudge): label -> cells.
    other_labels: dict[str, int] = field(default_factory=dict)
    accuracy: float | None = None
    labels: list[str] = field(default_factory=list)
    per_class: list[ClassMetrics] = field(default_factory=list)
    # confusion[i][j]: reviewed cells whose final label is labels[i] and prediction labels[j].
    confusion: list[list[int]] = field(default_factory=list)
    roc: list[RocCurve] = field(default_factory=list)
    # Share of scored cells that a pathologist reclassified at least once (override or amendment).
    override_rate: float | None = None
    flagged_cells: int = 0
    flagged_rate: float | None = None
    # What flagged cells turned out to be: final label (or NOT_REVIEWED) -> cells.
    flagged_outcomes: dict[str, int] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    cells_per_day: list[tuple[dt.date, int]] = field(default_factory=list)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _predictions_in(*, model_version: ModelVersion, period: Period) -> QuerySet[Prediction]:
    """The model version's predictions made within the period (the aggregates keep those of cells)."""
    return Prediction.objects.filter(
        model_version=model_version, created_at__gte=period.start_at, created_at__lt=period.end_before
    )


def roc_from_bins(*, negatives: np.ndarray, positives: np.ndarray) -> tuple[list[float], list[float], float]:
    """One-vs-rest ROC from cells per score bin: a point at each non-empty bin, from the highest score down,
    after (0, 0); AUC by trapezoids (cells sharing a bin count as tied)."""
    occupied = np.flatnonzero((negatives + positives)[::-1])
    true_positives = np.cumsum(positives[::-1])[occupied]
    false_positives = np.cumsum(negatives[::-1])[occupied]
    tpr = np.r_[0.0, true_positives / positives.sum()]
    fpr = np.r_[0.0, false_positives / negatives.sum()]
    return fpr.tolist(), tpr.tolist(), float(np.trapezoid(tpr, fpr))


def dashboard_metrics(*, model_version: ModelVersion, period: Period) -> DashboardMetrics:
    """Performance of one model version on the cells it classified within the period, added up from per-day
    aggregates computed in the database (reports.aggregates): grouped counts, 100 score bins per class and
    latency counts reach Python, never the cells.

    A cell counts as reviewed once it has a final label (cases.final_labels). Accuracy, precision, recall,
    F1, the confusion matrix, ROC and the override rate use reviewed cells whose final label is one of the
    version's classes; cells given a label the model does not have (a reviewer-only label such as smudge or
    artefact, or a class of another version) are counted apart in `other_labels`, never as model errors.
    Latency percentiles interpolate linearly between latencies rounded to 0.01 ms."""
    classes = list(model_version.classes)
    metrics = DashboardMetrics(model_version=model_version, period=period, labels=classes)
    predictions = _predictions_in(model_version=model_version, period=period)
    days = period_aggregates(model_version=model_version, predictions=predictions, days=period.days)
    metrics.cells_per_day = [(day, days[day].cells if day in days else 0) for day in period.days]
    index = {label: position for position, label in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    bins = np.zeros((len(classes), 2 * ROC_BINS), dtype=np.int64)
    flagged_outcomes: Counter = Counter()
    other_labels: Counter = Counter()
    latency: Counter = Counter()
    cases: set[int] = set()
    correct = scored = reclassified = 0
    for aggregate in days.values():
        cases.update(aggregate.cases)
        for value, count in aggregate.latency:
            latency[value] += count
        for label, counts in aggregate.bins.items():
            if label in index:
                bins[index[label]] += np.asarray(counts, dtype=np.int64)
        for final_label, predicted, flagged, was_reclassified, count in aggregate.groups:
            metrics.cells += count
            if flagged:
                metrics.flagged_cells += count
                flagged_outcomes[final_label or NOT_REVIEWED] += count
            if not final_label:
                continue
            metrics.reviewed_cells += count
            if final_label not in index:
                other_labels[final_label] += count
                continue
            scored += count
            reclassified += count if was_reclassified else 0
            correct += count if predicted == final_label else 0
            if predicted in index:
                confusion[index[final_label], index[predicted]] += count
    if not metrics.cells:
        return metrics
    metrics.cases = len(cases)
    latency_counts = sorted(latency.items())
    metrics.latency_p50_ms = percentile(latency_counts, 0.5)
    metrics.latency_p95_ms = percentile(latency_counts, 0.95)
    metrics.flagged_rate = _ratio(metrics.flagged_cells, metrics.cells)
    metrics.flagged_outcomes = dict(flagged_outcomes.most_common())
    metrics.other_labels = dict(other_labels.most_common())
    metrics.scored_cells = scored
    if not scored:
        return metrics
    metrics.confusion = confusion.tolist()
    metrics.accuracy = correct / scored
    metrics.override_rate = reclassified / scored
    for position, label in enumerate(classes):
        true_positives = int(confusion[position, position])
        support = int(confusion[position, :].sum())
        predicted_count = int(confusion[:, position].sum())
        precision = _ratio(true_positives, predicted_count)
        recall = _ratio(true_positives, support)
        if precision is None or recall is None:
            f1 = None
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics.per_class.append(ClassMetrics(label, support, predicted_count, precision, recall, f1))
        negatives, positives = bins[position, :ROC_BINS], bins[position, ROC_BINS:]
        if positives.sum() and negatives.sum():
            fpr, tpr, auc = roc_from_bins(negatives=negatives, positives=positives)
            metrics.roc.append(RocCurve(label=label, fpr=fpr, tpr=tpr, auc=auc))
    return metrics


def dashboard_csv_rows(*, metrics: DashboardMetrics) -> Iterator[list]:
    """The dashboard as long-format CSV rows: section, metric, class, predicted class, value."""
    yield ["section", "metric", "class", "predicted_class", "value"]
    info = [
        ("model_version", metrics.model_version.name),
        ("period_start", metrics.period.start.isoformat()),
        ("period_end", metrics.period.end.isoformat()),
        ("cases", metrics.cases),
        ("cells", metrics.cells),
        ("reviewed_cells", metrics.reviewed_cells),
        ("scored_cells", metrics.scored_cells),
        ("accuracy", metrics.accuracy),
        ("override_rate", metrics.override_rate),
        ("flagged_cells", metrics.flagged_cells),
        ("flagged_rate", metrics.flagged_rate),
        ("latency_p50_ms", metrics.latency_p50_ms),
        ("latency_p95_ms", metrics.latency_p95_ms),
    ]
    for name, value in info:
        yield ["summary", name, "", "", "" if value is None else value]
    for row in metrics.per_class:
        for name in ("precision", "recall", "f1", "support"):
            value = getattr(row, name)
            yield ["per_class", name, row.label, "", "" if value is None else value]
    for curve in metrics.roc:
        yield ["roc", "auc", curve.label, "", curve.auc]
    for true_index, counts in enumerate(metrics.confusion):
        for predicted_index, count in enumerate(counts):
            yield ["confusion", "cells", metrics.labels[true_index], metrics.labels[predicted_index], count]
    for label, count in metrics.other_labels.items():
        yield ["other_label", "cells", label, "", count]
    for outcome, count in metrics.flagged_outcomes.items():
        yield ["flagged_outcome", "cells", outcome, "", count]
    for day, count in metrics.cells_per_day:
        yield ["cells_per_day", day.isoformat(), "", "", count]


# --- Research export --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFilter:
    model_version: ModelVersion | None = None
    period: Period | None = None
    reviewed_only: bool = False


def export_predictions(*, export_filter: ExportFilter) -> QuerySet[Prediction]:
    """The predictions an export holds (of cells, never of a field image holding them), in the order of the
    (image, model version) unique index."""
    predictions = Prediction.objects.filter(image__kind=CellImage.Kind.CELL).order_by("image_id", "model_version_id")
    if export_filter.model_version is not None:
        predictions = predictions.filter(model_version=export_filter.model_version)
    if export_filter.period is not None:
        predictions = predictions.filter(
            created_at__gte=export_filter.period.start_at, created_at__lt=export_filter.period.end_before
        )
    if export_filter.reviewed_only:
        predictions = predictions.exclude(image__final_label="")
    return predictions


def export_classes(*, predictions: QuerySet[Prediction]) -> list[str]:
    """Every class of the model versions in the export, in each version's output order."""
    versions = ModelVersion.objects.filter(pk__in=predictions.values("model_version_id")).order_by("created_at")
    classes: list[str] = []
    for version in versions:
        classes.extend(name for name in version.classes if name not in classes)
    return classes


# --- Audit trail ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    action: str = ""
    actor: str = ""  # part of the actor's email
    object_type: str = ""
    object_id: str = ""
    period: Period | None = None


def audit_events(*, audit_filter: AuditFilter) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.select_related("actor").order_by("-created_at", "-id")
    if audit_filter.action:
        events = events.filter(action=audit_filter.action)
    if audit_filter.actor:
        events = events.filter(actor_email__icontains=audit_filter.actor)
    if audit_filter.object_type:
        events = events.filter(object_type=audit_filter.object_type)
    if audit_filter.object_id:
        events = events.filter(object_id=audit_filter.object_id)
    if audit_filter.period is not None:
        events = events.filter(
            created_at__gte=audit_filter.period.start_at, created_at__lt=audit_filter.period.end_before
        )
    return events


def audit_object_types() -> list[str]:
    return list(AuditEvent.objects.exclude(object_type="").values_list("object_type", flat=True).distinct().order_by())


# --- Errors and misclassifications ------------------------------------------------------------------------


def failed_classifications() -> QuerySet[CellImage]:
    """Images whose classification failed; they are kept so they can be retried or inspected."""
    return (
        CellImage.objects.filter(status=CellImage.Status.FAILED)
        .select_related("case")
        .order_by("-status_changed_at", "-id")
    )


def overridden_predictions() -> QuerySet[Review]:
    """Reviews that changed a cell's label (overrides and amendments), newest first."""
    return (
        Review.objects.filter(Q(kind=Review.Kind.OVERRIDE) | Q(kind=Review.Kind.AMENDMENT))
        .select_related("image", "image__case", "reviewer")
        .order_by("-created_at", "-id")
    )
