"""Reads for supervisors, researchers and admins: model performance, export rows, audit trail, errors.

Metrics are computed with numpy from predictions and final labels (a cell's latest review); the web
process never imports scikit-learn or TensorFlow.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.models import AuditEvent
from cases.models import CellImage, Prediction, Review
from inference.models import ModelVersion
from inference.registry import get_active_version

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
        return "The end date is before the start date."
    if start and end and (end - start).days >= MAX_PERIOD_DAYS:
        return f"Choose a period of at most {MAX_PERIOD_DAYS} days."
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
    reviewed_cells: int = 0
    accuracy: float | None = None
    labels: list[str] = field(default_factory=list)
    per_class: list[ClassMetrics] = field(default_factory=list)
    # confusion[i][j]: reviewed cells whose final label is labels[i] and prediction labels[j].
    confusion: list[list[int]] = field(default_factory=list)
    roc: list[RocCurve] = field(default_factory=list)
    # Share of reviewed cells that a pathologist reclassified at least once (override or amendment).
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


def final_labels_of(*, image_ids) -> tuple[dict[int, str], set[int]]:
    """Final label per image (its latest review) and the images a pathologist ever reclassified."""
    final: dict[int, str] = {}
    reclassified: set[int] = set()
    reviews = (
        Review.objects.filter(image_id__in=image_ids)
        .order_by("image_id", "created_at", "id")
        .values_list("image_id", "kind", "to_label")
    )
    for image_id, kind, to_label in reviews.iterator():
        final[image_id] = to_label
        if kind in (Review.Kind.OVERRIDE, Review.Kind.AMENDMENT):
            reclassified.add(image_id)
    return final, reclassified


def roc_curve(*, positives: np.ndarray, scores: np.ndarray) -> tuple[list[float], list[float], float]:
    """One-vs-rest ROC: a point at each distinct score threshold, from (0, 0) to (1, 1); AUC by trapezoids."""
    order = np.argsort(-scores, kind="mergesort")
    scores, positives = scores[order], positives[order].astype(float)
    last_of_each_threshold = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_positives = np.cumsum(positives)[last_of_each_threshold]
    false_positives = last_of_each_threshold + 1 - true_positives
    tpr = np.r_[0.0, true_positives / positives.sum()]
    fpr = np.r_[0.0, false_positives / (positives.size - positives.sum())]
    return fpr.tolist(), tpr.tolist(), float(np.trapezoid(tpr, fpr))


def dashboard_metrics(*, model_version: ModelVersion, period: Period) -> DashboardMetrics:
    """Performance of one model version on the cells it classified within the period."""
    predictions = list(
        Prediction.objects.filter(
            model_version=model_version, created_at__gte=period.start_at, created_at__lt=period.end_before
        ).values_list("image_id", "image__case_id", "label", "probabilities", "flagged", "latency_ms", "created_at")
    )
    metrics = DashboardMetrics(model_version=model_version, period=period, labels=list(model_version.classes))
    per_day = Counter(timezone.localdate(row[6]) for row in predictions)
    metrics.cells_per_day = [(day, per_day.get(day, 0)) for day in period.days]
    if not predictions:
        return metrics

    image_ids = [row[0] for row in predictions]
    final, reclassified = final_labels_of(image_ids=image_ids)
    metrics.cases = len({row[1] for row in predictions})
    metrics.cells = len(predictions)
    latencies = np.array([row[5] for row in predictions], dtype=float)
    metrics.latency_p50_ms = float(np.percentile(latencies, 50))
    metrics.latency_p95_ms = float(np.percentile(latencies, 95))

    flagged = [row for row in predictions if row[4]]
    metrics.flagged_cells = len(flagged)
    metrics.flagged_rate = _ratio(len(flagged), len(predictions))
    metrics.flagged_outcomes = dict(Counter(final.get(row[0], NOT_REVIEWED) for row in flagged).most_common())

    reviewed = [row for row in predictions if row[0] in final]
    metrics.reviewed_cells = len(reviewed)
    if not reviewed:
        return metrics
    labels = list(model_version.classes)
    labels.extend(sorted({final[row[0]] for row in reviewed} - set(labels)))
    metrics.labels = labels
    index = {label: position for position, label in enumerate(labels)}
    truth = np.array([index[final[row[0]]] for row in reviewed])
    predicted = np.array([index.get(row[2], -1) for row in reviewed])
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    for true_index, predicted_index in zip(truth, predicted, strict=True):
        if predicted_index >= 0:
            confusion[true_index, predicted_index] += 1
    metrics.confusion = confusion.tolist()
    metrics.accuracy = float(np.mean(truth == predicted))
    metrics.override_rate = _ratio(sum(1 for row in reviewed if row[0] in reclassified), len(reviewed))

    for position, label in enumerate(labels):
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
        positives = truth == position
        if 0 < positives.sum() < positives.size:
            scores = np.array([float(row[3].get(label, 0.0)) for row in reviewed])
            fpr, tpr, auc = roc_curve(positives=positives, scores=scores)
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
    predictions = Prediction.objects.select_related("model_version", "image").order_by("image_id", "id")
    if export_filter.model_version is not None:
        predictions = predictions.filter(model_version=export_filter.model_version)
    if export_filter.period is not None:
        predictions = predictions.filter(
            created_at__gte=export_filter.period.start_at, created_at__lt=export_filter.period.end_before
        )
    if export_filter.reviewed_only:
        predictions = predictions.filter(image__reviews__isnull=False).distinct()
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
