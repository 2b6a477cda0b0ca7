"""Metrics of a classifier on labelled images, and a readable report with plots.

`compute_metrics` is pure numpy/scikit-learn on (labels, probabilities); `evaluate_images` runs a
predictor over an ImageFolder dataset, through the same preprocessing and runtime that serve.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .calibration import expected_calibration_error


def compute_metrics(
    *,
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    flagged: np.ndarray | None = None,
    found: np.ndarray | None = None,
) -> dict:
    """accuracy, per-class precision/recall/F1/support/ROC-AUC, macro-F1, confusion matrix (rows = true
    class, columns = predicted), ECE, and the share and accuracy of predictions not flagged for review.

    ``found`` marks the images where a cell was found: the others count as wrong and flagged, and are
    counted per true class in ``no_cell_found`` (they have no column in the confusion matrix)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = len(classes)
    if len(labels) == 0:
        raise ValueError("cannot compute metrics on zero images")
    found = np.ones(len(labels), dtype=bool) if found is None else np.asarray(found, dtype=bool)
    predicted = np.where(found, probabilities.argmax(axis=1), -1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels[found], predicted[found]), 1)
    per_class = {}
    f1_values = []
    for index, name in enumerate(classes):
        true_positive = confusion[index, index]
        predicted_count = confusion[:, index].sum()
        support = int((labels == index).sum())
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        positives = labels == index
        roc_auc = None
        if positives.any() and not positives.all():
            roc_auc = float(roc_auc_score(positives, probabilities[:, index]))
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(support),
            "roc_auc": roc_auc,
        }
        if support:
            f1_values.append(f1)
    correct = predicted == labels
    flagged = np.zeros(len(labels), dtype=bool) if flagged is None else np.asarray(flagged, dtype=bool)
    flagged = flagged | ~found
    kept = ~flagged
    aucs = [c["roc_auc"] for c in per_class.values() if c["roc_auc"] is not None]
    return {
        "n": int(len(labels)),
        "classes": list(classes),
        "accuracy": float(correct.mean()),
        "macro_f1": float(np.mean(f1_values)) if f1_values else 0.0,
        "macro_roc_auc": float(np.mean(aucs)) if aucs else None,
        "ece": expected_calibration_error(probabilities, labels),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "flagged_fraction": float(flagged.mean()),
        "accuracy_unflagged": float(correct[kept].mean()) if kept.any() else None,
        "errors_unflagged": int((~correct & kept).sum()),
        "no_cell_found": {name: int(((labels == index) & ~found).sum()) for index, name in enumerate(classes)},
    }


def evaluate_images(
    *,
    predictor,
    paths: Sequence[Path],
    labels: np.ndarray,
    batch_size: int = 16,
    progress: Callable | None = None,
    labelled_boxes: Sequence[Sequence[tuple]] | None = None,
    laboratories: Sequence[str] | None = None,
) -> dict:
    """Run uploads' path (find the cells, classify them) on labelled image files and score one cell per
    image (``field_data.scored_cell``: the cell matching its labelled box, else the only leukocyte, else
    the one nearest the centre); an image where no cell is found counts as flagged and wrong.

    ``laboratories`` (per image) adds ``laboratories``: the same metrics per laboratory, when there are
    several.
    Returns compute_metrics(...) plus the probabilities, flags and out-of-distribution scores."""
    from .analysis import analyse_images
    from .data import load_rgb
    from .field_data import scored_cell

    n_classes = len(predictor.classes)
    probabilities = np.zeros((len(paths), n_classes))
    flagged = np.ones(len(paths), dtype=bool)
    found = np.zeros(len(paths), dtype=bool)
    ood_scores = np.full(len(paths), np.nan)
    flag_reasons: list[list[str]] = [[] for _ in paths]
    bar = progress("evaluating", len(paths)) if progress else None
    for start in range(0, len(paths), batch_size):
        rows = range(start, min(len(paths), start + batch_size))
        analyses = analyse_images([load_rgb(paths[row]) for row in rows], predictor=predictor)
        for row, analysis in zip(rows, analyses, strict=True):
            boxes = [cell.box for cell in analysis.cells]
            kinds = [cell.kind for cell in analysis.cells]
            chosen = scored_cell(boxes, kinds, analysis.size, labelled_boxes[row] if labelled_boxes else ())
            if chosen is not None:
                prediction = analysis.cells[chosen].prediction
                probabilities[row] = [prediction.probabilities[name] for name in predictor.classes]
                flagged[row] = prediction.flagged
                flag_reasons[row] = list(getattr(prediction, "flag_reasons", ()) or ())
                found[row] = True
                ood_scores[row] = np.nan if prediction.ood_score is None else prediction.ood_score
        if bar:
            bar.update(len(rows))
    if bar:
        bar.close()
    labels = np.asarray(labels, dtype=np.int64)
    metrics = compute_metrics(
        labels=labels, probabilities=probabilities, classes=predictor.classes, flagged=flagged, found=found
    )
    if laboratories is not None and len(set(laboratories)) > 1:
        names = np.asarray(laboratories)
        metrics["laboratories"] = {
            name: compute_metrics(
                labels=labels[names == name],
                probabilities=probabilities[names == name],
                classes=predictor.classes,
                flagged=flagged[names == name],
                found=found[names == name],
            )
            for name in sorted(set(laboratories))
        }
    return {
        "metrics": metrics,
        "probabilities": probabilities,
        "flagged": flagged,
        "ood_scores": ood_scores,
        "flag_reasons": flag_reasons,
        "found": found,
    }


def simulate_case_escalation(
    *,
    found: np.ndarray,
    flag_reasons: Sequence[Sequence[str]],
    laboratories: Sequence[str],
    case_size: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cases as a laboratory would send them: each laboratory's images in a seeded random order, cut into cases
    of ``case_size`` (the last one smaller), and the product's case rule (inference.case_review) applied to the
    flag reasons of each case's classified cells (images where a cell was found).

    Returns, per image, whether its case is escalated (every cell of it flagged) and its case's number."""
    from .case_review import needs_case_review

    if case_size < 1:
        raise ValueError("case_size must be at least 1")
    found = np.asarray(found, dtype=bool)
    names = np.asarray(laboratories)
    escalated = np.zeros(len(found), dtype=bool)
    case_numbers = np.zeros(len(found), dtype=np.int64)
    cases = 0
    generator = np.random.default_rng(seed)
    for name in sorted(set(names.tolist())):
        order = generator.permutation(np.flatnonzero(names == name))
        for start in range(0, len(order), case_size):
            members = order[start : start + case_size]
            case_numbers[members] = cases
            cases += 1
            if needs_case_review([flag_reasons[row] for row in members if found[row]]):
                escalated[members] = True
    return escalated, case_numbers


def case_escalation_metrics(
    *,
    labels: np.ndarray,
    probabilities: np.ndarray,
    flagged: np.ndarray,
    found: np.ndarray,
    escalated: np.ndarray,
    case_numbers: np.ndarray,
) -> dict:
    """The unflagged figures with and without case escalation (``*_case_escalated``: every cell of an escalated
    case flagged): how many cells go to review, and how often the ones that do not are wrong."""
    labels = np.asarray(labels, dtype=np.int64)
    found = np.asarray(found, dtype=bool)
    correct = found & (np.asarray(probabilities).argmax(axis=1) == labels)
    flagged = np.asarray(flagged, dtype=bool) | ~found
    escalated = np.asarray(escalated, dtype=bool)
    case_numbers = np.asarray(case_numbers)
    kept = ~(flagged | escalated)
    return {
        "unflagged_cells": int((~flagged).sum()),
        "cases": len(set(case_numbers.tolist())),
        "cases_escalated": len(set(case_numbers[escalated].tolist())),
        "escalated_cells": int(escalated.sum()),
        "flagged_fraction_case_escalated": float((~kept).mean()) if len(kept) else 0.0,
        "unflagged_cells_case_escalated": int(kept.sum()),
        "errors_unflagged_case_escalated": int((~correct & kept).sum()),
        "accuracy_unflagged_case_escalated": float(correct[kept].mean()) if kept.any() else None,
        "error_unflagged_case_escalated": float(1.0 - correct[kept].mean()) if kept.any() else None,
    }


def format_report(metrics: dict, *, title: str) -> str:
    """A Markdown report: headline figures, per-class table, confusion matrix."""
    lines = [f"# {title}", ""]
    lines.append(
        f"n = {metrics['n']}; accuracy {metrics['accuracy']:.4f}; macro-F1 {metrics['macro_f1']:.4f}; "
        f"ECE {metrics['ece']:.4f}; macro ROC-AUC "
        + (f"{metrics['macro_roc_auc']:.4f}" if metrics.get("macro_roc_auc") is not None else "n/a")
    )
    unflagged = metrics.get("accuracy_unflagged")
    lines.append(
        f"flagged for review: {metrics['flagged_fraction']:.2%}; accuracy of the others: "
        + (f"{unflagged:.4f}" if unflagged is not None else "n/a")
        + f" ({metrics.get('errors_unflagged', 0)} unflagged errors)"
    )
    if "case_size" in metrics:
        escalated_accuracy = metrics.get("accuracy_unflagged_case_escalated")
        lines.append(
            f"cases of {metrics['case_size']} (seed {metrics['case_seed']}): {metrics['cases_escalated']} of "
            f"{metrics['cases']} escalated; flagged for review {metrics['flagged_fraction_case_escalated']:.2%}; "
            f"{metrics['unflagged_cells_case_escalated']} unflagged, accuracy "
            + (f"{escalated_accuracy:.4f}" if escalated_accuracy is not None else "n/a")
            + f" ({metrics['errors_unflagged_case_escalated']} unflagged errors)"
        )
    lines += ["", "| class | precision | recall | F1 | ROC-AUC | support |", "|---|---|---|---|---|---|"]
    for name, row in metrics["per_class"].items():
        auc = f"{row['roc_auc']:.4f}" if row["roc_auc"] is not None else "n/a"
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {auc} | {row['support']} |"
        )
    classes = metrics["classes"]
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", ""]
    lines.append("| | " + " | ".join(name[:5] for name in classes) + " |")
    lines.append("|---" * (len(classes) + 1) + "|")
    for name, row in zip(classes, metrics["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    *, metrics: dict, probabilities: np.ndarray, labels: np.ndarray, output_dir: Path, title: str
) -> list[Path]:
    """report.md, metrics.json, confusion_matrix.png and roc.png in output_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    report = output_dir / "report.md"
    report.write_text(format_report(metrics, title=title), encoding="utf-8")
    written.append(report)
    metrics_path = output_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    written.append(metrics_path)

    classes = metrics["classes"]
    confusion = np.asarray(metrics["confusion_matrix"])
    figure, axis = plt.subplots(figsize=(7, 6))
    axis.imshow(confusion, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, column), value in np.ndenumerate(confusion):
        colour = "white" if value > confusion.max() / 2 else "black"
        axis.text(column, row, str(value), ha="center", va="center", color=colour, fontsize=8)
    axis.set_title(title)
    figure.tight_layout()
    path = output_dir / "confusion_matrix.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)

    figure, axis = plt.subplots(figsize=(6, 6))
    labels = np.asarray(labels)
    for index, name in enumerate(classes):
        positives = labels == index
        if positives.any() and not positives.all():
            fpr, tpr, _ = roc_curve(positives, probabilities[:, index])
            auc = metrics["per_class"][name]["roc_auc"]
            axis.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title(f"{title}: one-vs-rest ROC")
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    path = output_dir / "roc.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)
    return written
