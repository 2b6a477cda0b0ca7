"""The dashboard's shadow-mode comparison: the shadow version beside the shown one on the same reviewed cells
(hand-checked sums over the cells of tests/reports/conftest.py)."""

import pytest
from django.urls import reverse

from cases.models import Prediction, ShadowPrediction
from inference.models import ModelVersion
from reports.selectors import Period
from reports.shadow import shadow_comparison
from tests.factories import ModelVersionFactory

from .conftest import CLASSES, DAY_2, DAY_3

# What the shadow version said about each cell of CELLS, in order: (label, flagged).
SHADOW = [
    ("neutrophil", False),  # final neutrophil: right (the shown one was right too)
    ("lymphocyte", False),  # final lymphocyte: right (the shown one said neutrophil)
    ("lymphocyte", False),  # final lymphocyte: right
    ("neutrophil", True),  # final monocyte: wrong, flagged (the shown one was right, flagged)
    ("neutrophil", False),  # not reviewed: counted as classified, not compared
    ("monocyte", False),  # final monocyte: right (the shown one said lymphocyte)
]
PERIOD = Period(start=DAY_2, end=DAY_3)


@pytest.fixture
def shadowed(scored_version):
    ModelVersion.objects.filter(pk=scored_version.pk).update(is_active=True)
    shadow = ModelVersionFactory(name="north-shadow", classes=CLASSES, is_shadow=True)
    shown = list(Prediction.objects.filter(model_version=scored_version).order_by("image_id"))
    for prediction, (label, flagged) in zip(shown, SHADOW, strict=True):
        row = ShadowPrediction.objects.create(
            image_id=prediction.image_id,
            model_version=shadow,
            served_version=scored_version,
            label=label,
            confidence=0.9,
            probabilities={name: 0.9 if name == label else 0.05 for name in CLASSES},
            flagged=flagged,
            latency_ms=5.0,
        )
        ShadowPrediction.objects.filter(pk=row.pk).update(created_at=prediction.created_at)
    return shadow, scored_version


def test_both_versions_on_the_same_reviewed_cells(shadowed):
    shadow, active = shadowed
    comparison = shadow_comparison(period=PERIOD)

    assert (comparison.shadow, comparison.active, comparison.running) == (shadow, active, True)
    assert comparison.cells == 6 and comparison.reviewed == 5
    assert comparison.shadow_side.reviewed == comparison.active_side.reviewed == 5
    assert comparison.shadow_side.accuracy == pytest.approx(4 / 5)
    assert comparison.active_side.accuracy == pytest.approx(3 / 5)
    assert comparison.shadow_side.flagged_share == pytest.approx(1 / 5)
    assert comparison.active_side.flagged_share == pytest.approx(1 / 5)  # the flagged unreviewed cell is not in it
    recall = {label: (s, a, n) for label, s, a, n in comparison.recall_rows}
    assert recall == {
        "neutrophil": (1.0, 1.0, 1),
        "lymphocyte": (1.0, pytest.approx(0.5), 2),
        "monocyte": (pytest.approx(0.5), pytest.approx(0.5), 2),
    }


def test_only_cells_of_the_period_and_none_without_a_shadow(shadowed):
    assert shadow_comparison(period=Period(start=DAY_3, end=DAY_3)).cells == 1
    ShadowPrediction.objects.all().delete()
    ModelVersion.objects.filter(is_shadow=True).update(is_shadow=False)
    assert shadow_comparison(period=PERIOD) is None


def test_a_stopped_shadow_still_shows_what_it_said(shadowed):
    shadow, _ = shadowed
    ModelVersion.objects.filter(pk=shadow.pk).update(is_shadow=False)
    comparison = shadow_comparison(period=PERIOD)
    assert comparison.shadow == shadow and not comparison.running and comparison.reviewed == 5


def test_the_dashboard_shows_the_shadow_beside_the_active_version(shadowed, supervisor, client):
    client.force_login(supervisor)
    page = client.get(
        reverse("reports:dashboard"), {"start": DAY_2.isoformat(), "end": DAY_3.isoformat()}
    ).content.decode()
    assert 'data-testid="shadow-comparison"' in page and 'data-shadow="north-shadow"' in page
    assert '<td class="text-end" data-testid="shadow-accuracy">0.800</td>' in page
    assert '<td class="text-end" data-testid="active-accuracy">0.600</td>' in page
    assert page.count('data-testid="shadow-recall-row"') == 3


def test_no_shadow_section_without_a_shadow_version(scored_version, supervisor, client):
    client.force_login(supervisor)
    page = client.get(reverse("reports:dashboard"), {"start": DAY_2.isoformat(), "end": DAY_3.isoformat()})
    assert page.status_code == 200 and 'data-testid="shadow-comparison"' not in page.content.decode()
