"""The case rule (inference.case_review) and its simulation in `manage.py evaluate --case-size`."""

import json

import numpy as np
import pytest
from django.core.management import call_command

from inference import case_review
from inference.evaluation import case_escalation_metrics, simulate_case_escalation

UNLIKE = ["unfamiliar_imaging"]


@pytest.mark.parametrize(
    ("reasons", "escalated"),
    [
        ([UNLIKE, [], []], True),  # 3 cells, 33 %
        ([UNLIKE] * 3 + [[]] * 7, True),  # exactly 30 %
        ([UNLIKE] * 2 + [[]] * 5, False),  # 29 %
        ([UNLIKE] * 2, False),  # all unlike, but under the minimum of 3 cells
        ([["out_of_distribution"], ["not_a_cell", "low_confidence"], []], True),
        ([["low_confidence"]] * 3, False),  # merely unsure is not "unlike the training data"
        ([["unvalidated_case"]] * 3, False),  # a case is never warned because it was warned
        ([], False),
    ],
)
def test_the_rule_on_a_case_cells_reasons(reasons, escalated):
    assert case_review.needs_case_review(reasons) is escalated


def test_the_escalation_reason_is_added_once_and_keeps_the_others():
    assert case_review.escalated_reasons(["low_confidence"]) == ["low_confidence", "unvalidated_case"]
    assert case_review.escalated_reasons(["unvalidated_case"]) == ["unvalidated_case"]
    assert case_review.escalated_reasons(None) == ["unvalidated_case"]


def test_cases_are_cut_per_laboratory_in_a_seeded_order_and_escalated_as_a_whole():
    # Laboratory a: 6 images, every one unlike (escalated whatever the order); b: 6 clean images.
    laboratories = ["a"] * 6 + ["b"] * 6
    reasons = [UNLIKE] * 6 + [[]] * 6
    found = np.ones(12, dtype=bool)

    escalated, numbers = simulate_case_escalation(
        found=found, flag_reasons=reasons, laboratories=laboratories, case_size=3, seed=3
    )
    again, same_numbers = simulate_case_escalation(
        found=found, flag_reasons=reasons, laboratories=laboratories, case_size=3, seed=3
    )

    assert escalated.tolist() == [True] * 6 + [False] * 6
    assert np.array_equal(numbers, same_numbers) and np.array_equal(escalated, again)
    assert np.bincount(numbers).tolist() == [3, 3, 3, 3]  # two cases in each laboratory
    assert not set(numbers[:6].tolist()) & set(numbers[6:].tolist())
    shuffled, _ = simulate_case_escalation(
        found=found, flag_reasons=reasons, laboratories=laboratories, case_size=4, seed=3
    )
    # Cases of 4: 4 + 2 in each laboratory; the case of 2 is under the rule's minimum of 3 cells.
    assert shuffled[:6].sum() == 4 and not shuffled[6:].any()


def test_images_without_a_cell_are_not_classified_cells_of_their_case():
    # Two cells found, both unlike: under the rule's minimum of 3 classified cells, whatever the missing ones.
    escalated, _ = simulate_case_escalation(
        found=np.array([True, True, False, False]),
        flag_reasons=[UNLIKE, UNLIKE, [], []],
        laboratories=["a"] * 4,
        case_size=4,
    )
    assert not escalated.any()


def test_escalation_metrics_count_what_goes_to_review_and_the_errors_left():
    labels = np.array([0, 1, 2, 0, 1, 2])
    predicted = np.array([0, 2, 2, 0, 1, 0])  # wrong: rows 1 and 5
    figures = case_escalation_metrics(
        labels=labels,
        probabilities=np.eye(3)[predicted],
        flagged=np.array([True, False, False, False, False, False]),
        found=np.ones(6, dtype=bool),
        escalated=np.array([True, True, True, False, False, False]),
        case_numbers=np.array([0, 0, 0, 1, 1, 1]),
    )
    assert figures == {
        "unflagged_cells": 5,
        "cases": 2,
        "cases_escalated": 1,
        "escalated_cells": 3,
        "flagged_fraction_case_escalated": pytest.approx(0.5),
        "unflagged_cells_case_escalated": 3,
        "errors_unflagged_case_escalated": 1,
        "accuracy_unflagged_case_escalated": pytest.approx(2 / 3),
        "error_unflagged_case_escalated": pytest.approx(1 / 3),
    }


def _two_laboratories(tmp_path, tiny_model):
    from inference.testing import synthetic_cell_image

    roots = []
    for laboratory in ("lab-a", "lab-b"):
        root = tmp_path / laboratory / "test"
        for index, name in enumerate(tiny_model.classes):
            (root / name).mkdir(parents=True)
            for seed in range(2):
                synthetic_cell_image(index, len(tiny_model.classes), seed=90 + seed).save(root / name / f"{seed}.png")
        roots.append(root)
    return roots


def test_evaluate_adds_the_case_figures_overall_and_per_laboratory_and_keeps_every_key(
    tiny_model, tmp_path, capsys, monkeypatch
):
    from inference.management.commands import evaluate

    roots = _two_laboratories(tmp_path, tiny_model)
    arguments = ["--data", str(roots[0]), "--data", str(roots[1]), "--json"]
    call_command("evaluate", *arguments)
    plain = json.loads(capsys.readouterr().out)
    assert "case_size" not in plain and "unflagged_cells_case_escalated" not in plain  # off by default

    real = evaluate.evaluate_images

    def laboratory_a_unlike(**kwargs):
        # The tiny model flags nothing here: say every lab-a cell is imaged unlike the training data.
        result = real(**kwargs)
        for row, laboratory in enumerate(kwargs["laboratories"]):
            if laboratory == "lab-a":
                result["flag_reasons"][row] = ["unfamiliar_imaging"]
        return result

    monkeypatch.setattr(evaluate, "evaluate_images", laboratory_a_unlike)
    call_command("evaluate", *arguments, "--case-size", "3")
    metrics = json.loads(capsys.readouterr().out)

    assert set(plain) <= set(metrics)
    assert {key: metrics[key] for key in plain if key != "laboratories"} == {
        key: value for key, value in plain.items() if key != "laboratories"
    }
    lab_a, lab_b = metrics["laboratories"]["lab-a"], metrics["laboratories"]["lab-b"]
    assert lab_a["n"] == lab_b["n"] == 6
    assert (metrics["case_size"], metrics["case_seed"]) == (3, 0)
    assert (metrics["cases"], metrics["cases_escalated"]) == (4, 2)
    assert (lab_a["cases"], lab_a["cases_escalated"], lab_b["cases"], lab_b["cases_escalated"]) == (2, 2, 2, 0)
    assert lab_a["escalated_cells"] == 6 and lab_a["unflagged_cells_case_escalated"] == 0
    assert lab_a["flagged_fraction_case_escalated"] == 1.0
    assert lab_a["accuracy_unflagged_case_escalated"] is None
    assert lab_b["escalated_cells"] == 0
    assert lab_b["unflagged_cells_case_escalated"] == lab_b["unflagged_cells"]
    assert metrics["unflagged_cells_case_escalated"] == lab_b["unflagged_cells"]
    assert metrics["unflagged_cells"] == lab_a["unflagged_cells"] + lab_b["unflagged_cells"]


def test_evaluate_refuses_an_empty_case(db, tiny_model, tmp_path):
    from django.core.management.base import CommandError

    roots = _two_laboratories(tmp_path, tiny_model)
    with pytest.raises(CommandError, match="--case-size must be at least 1"):
        call_command("evaluate", "--data", str(roots[0]), "--case-size", "0", "--json")


def _row(layout, *cells_reasons):
    cells = [{"label": "NEUTROPHIL", "flagged": bool(r), "flag_reasons": list(r)} for r in cells_reasons]
    return {"path": f"{layout}.png", **cells[0], "layout": layout, "cells": cells}


def test_classify_as_one_case_counts_cells_as_the_product_stores_them_and_flags_them_all():
    from inference.management.commands.classify import _escalate_as_one_case

    # A crop counts its main cell only (1 unlike of 1); a field every cell (0 unlike of 3): 1 of 4, 25 %.
    rows = [_row("crop", UNLIKE, []), _row("field", [], [], []), {"path": "bad.png", "error": "unreadable"}]
    assert _escalate_as_one_case(rows) == {"classified_cells": 4, "unlike_training": 1, "escalated": False}
    assert rows[1]["flag_reasons"] == [] and not rows[1]["flagged"]

    rows.append(_row("field", ["not_a_cell"], ["low_confidence"]))  # 2 unlike of 6: 33 %
    assert _escalate_as_one_case(rows) == {"classified_cells": 6, "unlike_training": 2, "escalated": True}
    field = rows[1]
    assert field["flagged"] and field["flag_reasons"] == ["unvalidated_case"] and field["label"] == "NEUTROPHIL"
    assert all(cell["flag_reasons"][-1] == "unvalidated_case" for row in rows[:2] + rows[3:] for cell in row["cells"])
    assert rows[3]["cells"][1]["flag_reasons"] == ["low_confidence", "unvalidated_case"]
    assert "flag_reasons" not in rows[2]


def test_classify_json_says_what_the_case_rule_found_only_when_asked(tiny_model, tmp_path):
    from io import StringIO

    from inference.testing import synthetic_cell_image

    for index in range(3):
        synthetic_cell_image(index, 3, seed=7).save(tmp_path / f"{index}.png")
    plain, as_case = StringIO(), StringIO()
    call_command("classify", str(tmp_path), "--format", "json", stdout=plain)
    call_command("classify", str(tmp_path), "--format", "json", "--as-case", stdout=as_case)
    plain, as_case = json.loads(plain.getvalue()), json.loads(as_case.getvalue())
    assert "case" not in plain
    assert as_case["case"]["classified_cells"] == 3
    assert as_case["case"]["escalated"] is case_review.needs_case_review(
        [p["flag_reasons"] for p in plain["predictions"]]
    )
    assert [p["label"] for p in as_case["predictions"]] == [p["label"] for p in plain["predictions"]]
