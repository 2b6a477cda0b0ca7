"""Shadow mode on the dashboard: the version in shadow beside the active one, on the same reviewed cells.

Every cell classified while a version ran in shadow has two predictions: the one shown (cases.Prediction of
the active version) and the shadow's (cases.ShadowPrediction, never shown). Both are compared with the cell's
final label (cases.final_labels) on exactly the same cells; the database groups them by (final label,
predicted label, flagged), and only those grouped counts reach Python, as for the other report aggregates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from django.db.models import Count, QuerySet

from cases.models import CellImage, Prediction, ShadowPrediction
from inference.models import ModelVersion

from .selectors import Period


@dataclass
class SideMetrics:
    """One version's figures on the compared cells."""

    version: ModelVersion
    reviewed: int = 0  # compared cells with a final label
    scored: int = 0  # of which the final label is one of this version's classes (what accuracy is on)
    correct: int = 0
    flagged: int = 0
    accuracy: float | None = None
    flagged_share: float | None = None  # of the reviewed cells
    recall: dict[str, float | None] = field(default_factory=dict)


@dataclass
class ShadowComparison:
    shadow: ModelVersion
    active: ModelVersion  # the version whose predictions were shown on those cells
    period: Period
    running: bool  # the shadow version is still in shadow
    cells: int = 0  # cells both classified within the period, reviewed or not
    reviewed: int = 0
    shadow_side: SideMetrics | None = None
    active_side: SideMetrics | None = None
    # (final label, shadow recall, active recall, cells with that final label)
    recall_rows: list[tuple[str, float | None, float | None, int]] = field(default_factory=list)


def _shadow_predictions(*, shadow: ModelVersion, period: Period) -> QuerySet[ShadowPrediction]:
    return ShadowPrediction.objects.filter(
        model_version=shadow,
        image__kind=CellImage.Kind.CELL,
        created_at__gte=period.start_at,
        created_at__lt=period.end_before,
    )


def shadow_version_for(*, period: Period) -> ModelVersion | None:
    """The version in shadow now; else the one that ran in shadow most recently within the period."""
    current = ModelVersion.objects.filter(is_shadow=True).first()
    if current is not None:
        return current
    latest = (
        ShadowPrediction.objects.filter(created_at__gte=period.start_at, created_at__lt=period.end_before)
        .order_by("-created_at")
        .values_list("model_version_id", flat=True)
        .first()
    )
    return ModelVersion.objects.filter(pk=latest).first() if latest else None


def _side(version: ModelVersion, groups: list[tuple[str, str, bool, int]]) -> SideMetrics:
    side = SideMetrics(version=version)
    classes = set(version.classes)
    support: Counter = Counter()
    hits: Counter = Counter()
    for final_label, label, flagged, count in groups:
        side.reviewed += count
        side.flagged += count if flagged else 0
        support[final_label] += count
        if final_label == label:
            hits[final_label] += count
        if final_label in classes:
            side.scored += count
            side.correct += count if final_label == label else 0
    side.accuracy = side.correct / side.scored if side.scored else None
    side.flagged_share = side.flagged / side.reviewed if side.reviewed else None
    side.recall = {
        label: (hits[label] / support[label]) if label in classes else None for label in support if support[label]
    }
    return side


def shadow_comparison(*, period: Period, shadow: ModelVersion | None = None) -> ShadowComparison | None:
    """The shadow version (see shadow_version_for) beside the version shown on the same cells within the
    period, against their final labels; None when no version ran in shadow."""
    shadow = shadow or shadow_version_for(period=period)
    if shadow is None:
        return None
    rows = _shadow_predictions(shadow=shadow, period=period)
    # Cells shown by several active versions over the period (an activation meanwhile): compare with the
    # version that served most of them, on its cells only, so both sides stay the same cells.
    served = rows.order_by().values_list("served_version_id").annotate(n=Count("id")).order_by("-n").first()
    active = ModelVersion.objects.filter(pk=served[0]).first() if served else None
    if active is None:
        active = ModelVersion.objects.filter(is_active=True).first()
    comparison = ShadowComparison(shadow=shadow, active=active, period=period, running=shadow.is_shadow)
    if active is None:
        return comparison
    rows = rows.filter(served_version=active)
    comparison.cells = rows.count()
    reviewed = rows.exclude(image__final_label="")
    shadow_groups = list(
        reviewed.order_by().values_list("image__final_label", "label", "flagged").annotate(n=Count("id"))
    )
    # The shown predictions of exactly those cells (one per cell and version: a unique constraint).
    shown = Prediction.objects.filter(model_version=active, image_id__in=reviewed.values("image_id"))
    active_groups = list(shown.order_by().values_list("image__final_label", "label", "flagged").annotate(n=Count("id")))
    comparison.shadow_side = _side(shadow, shadow_groups)
    comparison.active_side = _side(active, active_groups)
    comparison.reviewed = comparison.shadow_side.reviewed
    support: Counter = Counter()
    for final_label, _, _, count in shadow_groups:
        support[final_label] += count
    order = [label for label in active.classes if label in support]
    order += [label for label in shadow.classes if label in support and label not in order]
    order += sorted(label for label in support if label not in order)
    comparison.recall_rows = [
        (
            label,
            comparison.shadow_side.recall.get(label),
            comparison.active_side.recall.get(label),
            support[label],
        )
        for label in order
    ]
    return comparison
