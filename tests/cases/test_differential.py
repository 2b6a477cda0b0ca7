import pytest

from cases.differential import LabelledCell, compute_differential
from cases.review_selectors import case_differential
from tests.factories import PBC_CLASSES, CellImageFactory, ModelVersionFactory, PredictionFactory


def cells(**counts):
    return [LabelledCell(label=label, reviewed=True) for label, count in counts.items() for _ in range(count)]


def row(differential, label):
    return next(r for r in differential.rows if r.label == label)


def test_percentages_are_of_leukocytes_only():
    differential = compute_differential(
        cells=cells(neutrophil=6, lymphocyte=3, monocyte=1, platelet=5, erythroblast=2), classes=PBC_CLASSES
    )
    assert differential.total_cells == 17
    assert differential.leukocytes == 10
    assert row(differential, "neutrophil").value == pytest.approx(60.0)
    assert row(differential, "lymphocyte").value == pytest.approx(30.0)
    assert row(differential, "monocyte").value == pytest.approx(10.0)


def test_erythroblasts_are_reported_per_100_leukocytes_and_flagged():
    differential = compute_differential(cells=cells(neutrophil=6, lymphocyte=4, erythroblast=2), classes=PBC_CLASSES)
    erythroblasts = row(differential, "erythroblast")
    assert erythroblasts.value == pytest.approx(20.0)
    assert erythroblasts.unit == "/100 WBC"
    assert erythroblasts.flag == "high"


def test_platelets_are_counted_without_percentage():
    platelets = row(compute_differential(cells=cells(neutrophil=1, platelet=3), classes=PBC_CLASSES), "platelet")
    assert (platelets.count, platelets.value, platelets.flag) == (3, None, "")


def test_values_outside_reference_ranges_are_flagged_low_and_high():
    # 90% neutrophils (range 40-75) and 10% lymphocytes (range 20-45).
    differential = compute_differential(cells=cells(neutrophil=9, lymphocyte=1), classes=PBC_CLASSES)
    assert row(differential, "neutrophil").flag == "high"
    assert row(differential, "lymphocyte").flag == "low"
    assert row(differential, "basophil").flag == ""  # 0% is inside 0-2


def test_boundaries_of_a_range_are_inside_it():
    # 2 of 5 leukocytes: exactly 40%, the lower bound of the neutrophil range.
    differential = compute_differential(cells=cells(neutrophil=2, lymphocyte=3), classes=PBC_CLASSES)
    assert row(differential, "neutrophil").value == pytest.approx(40.0)
    assert row(differential, "neutrophil").flag == ""


def test_every_class_has_a_row_in_model_order():
    differential = compute_differential(cells=cells(monocyte=1), classes=PBC_CLASSES)
    assert [r.label for r in differential.rows] == PBC_CLASSES
    assert row(differential, "neutrophil").count == 0


def test_unreviewed_cells_are_counted_and_marked():
    differential = compute_differential(
        cells=[LabelledCell("neutrophil", True), LabelledCell("neutrophil", False)], classes=PBC_CLASSES, unlabelled=1
    )
    neutrophils = row(differential, "neutrophil")
    assert (neutrophils.count, neutrophils.reviewed, neutrophils.unreviewed) == (2, 1, 1)
    assert (differential.total_cells, differential.reviewed_cells, differential.unreviewed_cells) == (3, 1, 1)


def test_class_names_match_ranges_whatever_their_case():
    differential = compute_differential(cells=cells(NEUTROPHIL=1), classes=["NEUTROPHIL", "LYMPHOCYTE"])
    assert row(differential, "NEUTROPHIL").high == 75.0
    assert row(differential, "LYMPHOCYTE").flag == "low"


@pytest.mark.django_db
def test_case_differential_uses_final_label_over_prediction(pathologist):
    from cases.models import Review

    version = ModelVersionFactory()
    image = CellImageFactory()
    PredictionFactory(image=image, model_version=version, label="neutrophil")
    Review.objects.create(
        image=image,
        reviewer=pathologist,
        kind="override",
        from_label="neutrophil",
        to_label="monocyte",
        reason="nucleus",
    )
    differential = case_differential(case=image.case)
    assert row(differential, "monocyte").count == 1
    assert row(differential, "neutrophil").count == 0
