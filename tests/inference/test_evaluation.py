import json

import numpy as np
import pytest
from django.core.management import call_command

from inference.evaluation import compute_metrics

CLASSES = ["A", "B", "C"]


def _metrics():
    labels = np.array([0, 0, 1, 1, 2, 2])
    # Predicted: 0, 1, 1, 1, 2, 0
    probabilities = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.3, 0.6, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.1, 0.8],
            [0.5, 0.2, 0.3],
        ]
    )
    flagged = np.array([False, True, False, False, False, True])
    return compute_metrics(labels=labels, probabilities=probabilities, classes=CLASSES, flagged=flagged)


def test_accuracy_and_confusion_matrix_match_hand_counts():
    metrics = _metrics()
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_per_class_precision_recall_f1_match_hand_values():
    per_class = _metrics()["per_class"]
    # A: predicted twice, right once; B: predicted three times, right twice; C: predicted once, right.
    assert per_class["A"]["precision"] == pytest.approx(1 / 2)
    assert per_class["A"]["recall"] == pytest.approx(1 / 2)
    assert per_class["B"]["precision"] == pytest.approx(2 / 3)
    assert per_class["B"]["f1"] == pytest.approx(0.8)
    assert per_class["C"]["recall"] == pytest.approx(1 / 2)
    assert per_class["C"]["f1"] == pytest.approx(2 / 3)


def test_macro_f1_is_the_mean_of_class_f1():
    assert _metrics()["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_roc_auc_per_class_matches_hand_value():
    # Class C scores: positives 0.1 (row 0? no) -> positives rows 4, 5 (0.8, 0.3); negatives 0.1, 0.1, 0.1, 0.1.
    assert _metrics()["per_class"]["C"]["roc_auc"] == pytest.approx(1.0)
    # Class A: positives 0.8, 0.3; negatives 0.1, 0.2, 0.1, 0.5 -> pairs won: 4 + 3 = 7 of 8.
    assert _metrics()["per_class"]["A"]["roc_auc"] == pytest.approx(7 / 8)


def test_flagged_fraction_and_unflagged_accuracy():
    metrics = _metrics()
    assert metrics["flagged_fraction"] == pytest.approx(2 / 6)
    assert metrics["accuracy_unflagged"] == pytest.approx(1.0)
    assert metrics["errors_unflagged"] == 0


def test_ece_of_hand_example():
    # Confidences 0.8, 0.6, 0.8, 0.7, 0.8, 0.5 with correctness 1, 0, 1, 1, 1, 0 (15 bins):
    # bin (0.467, 0.533]: {0.5: wrong} -> 1/6 * 0.5; bin (0.533, 0.6]: {0.6: wrong} -> 1/6 * 0.6;
    # bin (0.667, 0.733]: {0.7: right} -> 1/6 * 0.3; bin (0.733, 0.8]: {0.8 x3, all right} -> 3/6 * 0.2.
    assert _metrics()["ece"] == pytest.approx((0.5 + 0.6 + 0.3 + 0.6) / 6)


@pytest.mark.slow
def test_evaluate_command_prints_json_metrics(tiny_model, tmp_path, capsys):
    from inference.testing import synthetic_cell_image

    for index, name in enumerate(tiny_model.classes):
        (tmp_path / name).mkdir()
        for seed in range(3):
            synthetic_cell_image(index, len(tiny_model.classes), seed=50 + seed).save(tmp_path / name / f"{seed}.png")
    call_command("evaluate", "--data", str(tmp_path), "--json")
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 9
    for key in ("classes", "accuracy", "macro_f1", "ece", "per_class", "confusion_matrix", "flagged_fraction"):
        assert key in metrics
    assert metrics["accuracy"] == pytest.approx(1.0)


@pytest.mark.slow
def test_evaluate_command_rejects_folders_that_are_not_model_classes(tiny_model, tmp_path):
    from django.core.management.base import CommandError

    (tmp_path / "MYSTERY").mkdir()
    (tmp_path / "MYSTERY" / "x.png").write_bytes(b"")
    with pytest.raises(CommandError, match="not classes of the model"):
        call_command("evaluate", "--data", str(tmp_path))


def _write_field_manifest(root, tiny_model):
    """One labelled field per class (a synthetic cell pasted into a smear), boxes for the first two."""
    import csv

    from PIL import Image

    from inference.testing import synthetic_cell_image
    from tests.inference.smears import smear

    (root / "images").mkdir(parents=True)
    rows, boxes = [], []
    for index, name in enumerate(tiny_model.classes):
        field, _ = smear(leukocytes=[], seed=index)
        cell = synthetic_cell_image(index, len(tiny_model.classes), size=96, seed=60 + index)
        field.paste(cell, (272, 192))
        path = f"images/{index}.png"
        field.save(root / path)
        rows.append(["test", name, path, "1" if index < 2 else ""])
        if index < 2:
            boxes.append([path, "WBC", 272, 192, 368, 288])
    Image.new("RGB", (640, 480), (230, 225, 200)).save(root / "images" / "empty.png")
    rows.append(["test", tiny_model.classes[0], "images/empty.png", ""])
    with open(root / "MANIFEST.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([["split", "label", "path", "boxes"], *rows])
    with open(root / "BOXES.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([["path", "class", "xmin", "ymin", "xmax", "ymax"], *boxes])


@pytest.mark.slow
def test_evaluate_reads_fields_with_boxes_and_counts_a_field_without_a_cell_as_wrong(tiny_model, tmp_path, capsys):
    _write_field_manifest(tmp_path / "fields", tiny_model)
    call_command("evaluate", "--data", str(tmp_path / "fields"), "--json")
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 4
    assert metrics["no_cell_found"][tiny_model.classes[0]] == 1
    # The empty field is wrong and flagged whatever the tiny model says of the others.
    assert metrics["accuracy"] <= 3 / 4
    assert metrics["flagged_fraction"] >= 1 / 4
    # Detection quality itself is tested on drawn smears (test_locate); here the keys and their count.
    assert metrics["detection_true_boxes"] == 2
    assert 0.0 <= metrics["detection_recall"] <= 1.0 and 0.0 <= metrics["detection_precision"] <= 1.0


@pytest.mark.slow
def test_evaluate_reports_each_laboratory_when_several_are_given(tiny_model, tmp_path, capsys):
    from inference.testing import synthetic_cell_image

    crops = tmp_path / "lab-a" / "test"
    for index, name in enumerate(tiny_model.classes):
        (crops / name).mkdir(parents=True)
        synthetic_cell_image(index, len(tiny_model.classes), seed=70 + index).save(crops / name / "c.png")
    _write_field_manifest(tmp_path / "lab-b", tiny_model)
    call_command("evaluate", "--data", str(crops), "--data", str(tmp_path / "lab-b"), "--json")
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 7
    assert set(metrics["laboratories"]) == {"lab-a", "lab-b"}
    assert metrics["laboratories"]["lab-a"]["n"] == 3
    assert "detection_recall" in metrics["laboratories"]["lab-b"]


@pytest.mark.slow
def test_evaluate_installs_the_bundled_model_when_none_is_active(db, settings, tmp_path, capsys):
    from inference.models import ModelVersion
    from inference.predictor import reset_predictor
    from inference.testing import synthetic_cell_image

    reset_predictor()
    settings.INFERENCE_AUTO_BUNDLED_MODEL = True
    (tmp_path / "NEUTROPHIL").mkdir()
    synthetic_cell_image(0, 3, size=128).save(tmp_path / "NEUTROPHIL" / "a.png")
    call_command("evaluate", "--data", str(tmp_path), "--json")
    assert json.loads(capsys.readouterr().out)["n"] == 1
    assert ModelVersion.objects.filter(is_active=True, source=ModelVersion.Source.BUNDLED).exists()
    reset_predictor()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "any", "--model-dir", "folder"], "--model or --model-dir, not both"),
        (["--model-dir", "folder", "--record"], "--record needs a registered version"),
    ],
)
def test_evaluate_refuses_options_that_would_do_nothing(db, tmp_path, arguments, message):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        call_command("evaluate", "--data", str(tmp_path), *arguments)
