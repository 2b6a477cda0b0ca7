"""A small, hand-checkable set of predictions and reviews (see test_dashboard_metrics.py for the sums)."""

import datetime as dt

import pytest
from django.utils import timezone

from cases.models import Case, Prediction
from cases.review_services import review_cells
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

CLASSES = ["neutrophil", "lymphocyte", "monocyte"]
DAY_2 = dt.date(2025, 3, 2)
DAY_3 = dt.date(2025, 3, 3)

# (predicted, probabilities n/l/m, flagged, latency ms, day, final label or None)
CELLS = [
    ("neutrophil", (0.8, 0.1, 0.1), False, 10.0, DAY_2, "neutrophil"),
    ("neutrophil", (0.6, 0.3, 0.1), False, 20.0, DAY_2, "lymphocyte"),
    ("lymphocyte", (0.2, 0.7, 0.1), False, 30.0, DAY_2, "lymphocyte"),
    ("monocyte", (0.1, 0.2, 0.7), True, 40.0, DAY_2, "monocyte"),
    ("neutrophil", (0.5, 0.2, 0.3), True, 50.0, DAY_2, None),
    ("lymphocyte", (0.1, 0.6, 0.3), False, 60.0, DAY_3, "monocyte"),
]


def at_noon(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(12, 0)))


@pytest.fixture
def scored_version(db, pathologist):
    version = ModelVersionFactory(classes=CLASSES)
    cases = [CaseFactory(status=Case.Status.AWAITING_REVIEW) for _ in range(2)]
    for index, (label, probabilities, flagged, latency, day, final) in enumerate(CELLS):
        case = cases[index // 3]
        prediction = PredictionFactory(
            image=CellImageFactory(case=case),
            model_version=version,
            label=label,
            confidence=max(probabilities),
            probabilities=dict(zip(CLASSES, probabilities, strict=True)),
            flagged=flagged,
            latency_ms=latency,
        )
        Prediction.objects.filter(pk=prediction.pk).update(created_at=at_noon(day))
        if final is not None:
            reason = "" if final == label else "morphology"
            review_cells(
                case=case, image_ids=[prediction.image_id], reviewer=pathologist, to_label=final, reason=reason
            )
    return version
