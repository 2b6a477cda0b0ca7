"""manage.py classify PATH...: every cell found in image files and folders (crops or whole fields), classified
by the active (or a named) model."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from PIL import UnidentifiedImageError

from hematovision.csv_safety import SafeWriter
from inference import case_review
from inference.analysis import analyse_images
from inference.data import IMAGE_SUFFIXES, load_rgb
from inference.predictor import ModelUnavailable, Predictor, get_predictor
from inference.selectors import find_version


class Command(BaseCommand):
    help = "Classify image files (folders are searched recursively); prints CSV or JSON."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--model", help="model version name or id (default: the active version)")
        parser.add_argument("--format", choices=("csv", "json"), default="csv")
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument(
            "--as-case",
            action="store_true",
            help="treat the images as one case: when the case as a whole is imaged unlike the training data "
            "(the product's case rule, inference/case_review.py), every cell is flagged unvalidated_case",
        )

    def handle(self, *args, **options):
        files = []
        for path in options["paths"]:
            if path.is_dir():
                files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"no such file or folder: {path}")
        if not files:
            raise CommandError("no image files found")
        try:
            if options["model"]:
                version = find_version(name_or_id=options["model"])
                if version is None:
                    raise CommandError(f"no model version named {options['model']!r}")
                predictor = Predictor(version)
            else:
                predictor = get_predictor()
        except ModelUnavailable as exc:
            raise CommandError(str(exc)) from exc
        rows = []
        for start in range(0, len(files), options["batch_size"]):
            chunk, images = [], []
            for path in files[start : start + options["batch_size"]]:
                try:
                    images.append(load_rgb(path))
                    chunk.append(path)
                except (UnidentifiedImageError, OSError, ValueError) as exc:
                    rows.append({"path": str(path), "error": f"unreadable image: {exc}"})
            for path, analysis in zip(chunk, analyse_images(images, predictor=predictor), strict=True):
                rows.append(_image_row(path, analysis))
        case = _escalate_as_one_case(rows) if options["as_case"] else None
        if options["format"] == "json":
            answer = {"model": predictor.version.name, "predictions": rows}
            if case is not None:
                answer["case"] = case
            self.stdout.write(json.dumps(answer, indent=2))
            return
        writer = SafeWriter(self.stdout)  # file names are the user's: no cell may start a formula
        writer.writerow(
            ["path", "cell", "x0", "y0", "x1", "y1", "label", "confidence", "flagged", "flag_reasons", "ood_score",
             "latency_ms", "error", *predictor.classes]
        )  # fmt: skip
        for row in rows:
            # One row per found cell; an image without one (or unreadable) still gets its row.
            for index, cell in enumerate(row.get("cells") or [{}]):
                probabilities = cell.get("probabilities", {})
                box = cell.get("box") or ["", "", "", ""]
                error = row.get("error", "" if row.get("cells") else "no cell found")
                writer.writerow(
                    [
                        row["path"],
                        index if cell else "",
                        *box,
                        cell.get("label", ""),
                        cell.get("confidence", ""),
                        cell.get("flagged", ""),
                        " ".join(cell.get("flag_reasons", [])),
                        cell.get("ood_score", ""),
                        row.get("latency_ms", ""),
                        error,
                        *[probabilities.get(name, "") for name in predictor.classes],
                    ]
                )


def _escalate_as_one_case(rows: list[dict]) -> dict:
    """Apply the case rule to the images' classified cells as the product stores them (every cell of a field,
    the main cell of a crop); when it holds, flag every cell `unvalidated_case` (keeping its label)."""
    stored = [row["cells"] if row.get("layout") == "field" else [row] for row in rows if row.get("cells")]
    reasons = [cell["flag_reasons"] for cells in stored for cell in cells]
    escalated = case_review.needs_case_review(reasons)
    if escalated:
        for row in rows:
            if row.get("cells"):
                for cell in [row, *row["cells"]]:
                    cell["flagged"] = True
                    cell["flag_reasons"] = case_review.escalated_reasons(cell["flag_reasons"])
    return {
        "classified_cells": len(reasons),
        "unlike_training": sum(1 for cell_reasons in reasons if case_review.is_unlike_training(cell_reasons)),
        "escalated": escalated,
    }


def _cell_fields(prediction) -> dict:
    return {
        "label": prediction.label,
        "confidence": round(prediction.confidence, 6),
        "flagged": prediction.flagged,
        "flag_reasons": list(prediction.flag_reasons),
        "ood_score": None if prediction.ood_score is None else round(prediction.ood_score, 4),
        "probabilities": {k: round(v, 6) for k, v in prediction.probabilities.items()},
    }


def _image_row(path: Path, analysis) -> dict:
    """The image's main cell at the top level (label null when no cell is found), every cell in "cells"."""
    cells = [{"box": list(cell.box), **_cell_fields(cell.prediction)} for cell in analysis.cells]
    main = analysis.main
    if main is None:
        top = {
            "label": None,
            "confidence": None,
            "flagged": True,
            "flag_reasons": ["no_cell_found"],
            "ood_score": None,
            "probabilities": {},
        }
        latency = 0.0
    else:
        top = _cell_fields(main.prediction)
        latency = main.prediction.latency_ms
    return {
        "path": str(path),
        **top,
        "latency_ms": round(latency, 2),
        "layout": analysis.layout,
        "cells": cells,
    }
