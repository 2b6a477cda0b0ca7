"""Manifest-layout fields: reading them, which cell a label is scored on, detection counts."""

import csv

import pytest

from inference.data import DatasetError
from inference.field_data import (
    detection_counts,
    is_manifest_layout,
    laboratory_name,
    load_labelled,
    read_manifest,
    scored_cell,
)
from inference.testing import synthetic_cell_image
from tests.inference.smears import smear


def write_manifest(root, rows, boxes=()):
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "MANIFEST.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["split", "label", "path", "boxes"])
        writer.writerows(rows)
    with open(root / "BOXES.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "class", "xmin", "ymin", "xmax", "ymax"])
        writer.writerows(boxes)


def test_the_labelled_box_decides_which_cell_is_scored():
    boxes = [(0, 0, 50, 50), (100, 100, 160, 160)]
    assert scored_cell(boxes, ["leukocyte", "leukocyte"], (640, 480), [(98, 102, 158, 162)]) == 1


def test_without_a_box_the_only_leukocyte_is_scored():
    boxes = [(0, 0, 10, 10), (300, 300, 360, 360)]
    assert scored_cell(boxes, ["platelet", "leukocyte"], (640, 480), []) == 1


def test_otherwise_the_cell_nearest_the_centre_is_scored():
    boxes = [(0, 0, 60, 60), (300, 220, 360, 280), (580, 400, 640, 480)]
    assert scored_cell(boxes, ["leukocyte"] * 3, (640, 480), []) == 1


def test_no_cell_found_scores_nothing():
    assert scored_cell([], [], (640, 480), [(0, 0, 10, 10)]) is None


def test_detection_counts_use_each_found_box_once():
    truth = [(0, 0, 100, 100), (200, 200, 300, 300)]
    found = [(5, 5, 100, 100), (10, 10, 100, 100), (500, 0, 560, 60)]
    assert detection_counts(found, truth) == (1, 1, 2)


def test_manifest_fields_carry_their_leukocyte_boxes(tmp_path):
    write_manifest(
        tmp_path,
        [
            ["test", "NEUTROPHIL", "images/a.jpg", "2"],
            ["test", "", "images/b.jpg", "1"],
            ["train", "LYMPHOCYTE", "images/c.jpg", ""],
        ],
        [
            ["images/a.jpg", "WBC", 1, 2, 30, 40],
            ["images/a.jpg", "RBC", 5, 5, 9, 9],
            ["images/b.jpg", "WBC", 0, 0, 9, 9],
        ],
    )
    assert is_manifest_layout(tmp_path)
    samples = read_manifest(tmp_path, split="test")
    assert [(s.label, s.leukocyte_boxes) for s in samples] == [("NEUTROPHIL", ((1, 2, 30, 40),))]
    assert len(read_manifest(tmp_path, split="test", labelled_only=False)) == 2


def test_split_folders_are_named_by_their_laboratory(tmp_path):
    assert laboratory_name(tmp_path / "pbc" / "test") == "pbc"
    assert laboratory_name(tmp_path / "olympus") == "olympus"


def test_both_layouts_load_together_with_their_laboratories(tmp_path):
    crops = tmp_path / "lab-a" / "test"
    for index, name in enumerate(["LYMPHOCYTE", "NEUTROPHIL"]):
        (crops / name).mkdir(parents=True)
        synthetic_cell_image(index, 3).save(crops / name / "x.png")
    fields = tmp_path / "lab-b"
    write_manifest(fields, [["test", "NEUTROPHIL", "images/f.png", "1"]], [["images/f.png", "WBC", 110, 110, 190, 190]])
    smear(leukocytes=[(150, 150)])[0].save(fields / "images" / "f.png")
    labelled = load_labelled([crops, fields], classes=["LYMPHOCYTE", "NEUTROPHIL", "PLATELET"])
    assert labelled.laboratories == ["lab-a", "lab-a", "lab-b"]
    assert list(labelled.labels) == [0, 1, 1]
    assert labelled.labelled_boxes[-1] == ((110, 110, 190, 190),)


def test_a_label_the_model_does_not_know_is_an_error(tmp_path):
    write_manifest(tmp_path, [["test", "BLAST", "images/f.png", ""]])
    with pytest.raises(DatasetError, match="BLAST"):
        load_labelled([tmp_path], classes=["LYMPHOCYTE", "NEUTROPHIL"])
