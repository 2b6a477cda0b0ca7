"""Accuracy on a new laboratory after adapting with 5 / 10 / 25 / 50 labelled cells per class.

    DJANGO_SETTINGS_MODULE=hematovision.settings.local \\
        .venv/bin/python bench/adapt_curve.py --base-model DIR --data olympus --json

Uses olympus as the laboratory the base model has never seen: adapt (``inference.adapt.adapt_model``, the
code `manage.py adapt` runs) on k cells per class drawn from olympus *train* (capped by what exists),
`--draws` random draws per k, then measure accuracy on olympus *test* through the serving predictor.
Optionally (`--base-test DIR`) also on a base test set, to see what adaptation costs the base lab.

Olympus cells: adaptation draws from the labelled cell of each olympus *train* field cut at the canonical
scale as serving cuts it (``inference.field_data.export_cell_windows``: the cells a lab's reviews would
confirm); accuracy is measured on every labelled olympus *test* field through the upload path (find the
cells, score the labelled one), as `manage.py evaluate --data ../shared/datasets/olympus --split test` does.
Olympus images never ship.
`--tiny` runs a small setting (one k, one draw, one epoch, a few test cells) to check the script.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OLYMPUS = ROOT.parent / "shared" / "datasets" / "olympus"


def accuracy_on(model_dir: Path, images) -> float:
    """Accuracy through the upload path on ``LabelledImages`` (fields or class folders)."""
    from inference.evaluation import evaluate_images
    from inference.predictor import Predictor
    from inference.selectors import version_from_directory

    predictor = Predictor(version_from_directory(model_dir))
    return float(evaluate_images(predictor=predictor, **images.evaluation_arguments())["metrics"]["accuracy"])


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", type=Path, required=True, help="model folder (metadata.json, model.keras)")
    parser.add_argument("--data", choices=["olympus"], default="olympus")
    parser.add_argument("--shots", default="5,10,25,50", help="cells per class, comma-separated")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--base-test", type=Path, help="also measure on this base test set (class folders)")
    parser.add_argument("--base-test-limit", type=int, default=None, help="at most this many base test cells")
    parser.add_argument("--tiny", action="store_true", help="one small setting, to check the script")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import os

    import django

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")
    django.setup()
    from inference.adapt import AdaptConfig, adapt_model
    from inference.data import ImageDataset, load_image_folder
    from inference.field_data import LabelledImages, export_cell_windows, load_labelled
    from inference.model_folder import read_model_metadata

    started = time.perf_counter()
    shots = [int(k) for k in args.shots.split(",")]
    draws, epochs = args.draws, args.epochs
    if args.tiny:
        shots, draws, epochs = [2], 1, epochs or 1
    classes = read_model_metadata(args.base_model)["classes"]
    test_set = load_labelled([OLYMPUS], classes=classes, split="test")
    if args.tiny:
        keep = slice(None, None, 8)
        test_set = LabelledImages(
            classes=classes,
            paths=test_set.paths[keep],
            labels_list=test_set.labels_list[keep],
            labelled_boxes=test_set.labelled_boxes[keep],
            laboratories=test_set.laboratories[keep],
        )
    config = AdaptConfig(**({"epochs": epochs} if epochs else {}))

    results = {"base_model": str(args.base_model), "data": args.data, "config": {"epochs": config.epochs}}
    with tempfile.TemporaryDirectory(prefix="adapt-curve-") as scratch:
        scratch = Path(scratch)
        export_cell_windows(OLYMPUS, split="train", output_dir=scratch / "train")
        train_all = load_image_folder([scratch / "train"], classes=classes)
        by_class = defaultdict(list)
        for index, label in enumerate(train_all.labels):
            by_class[classes[label]].append(index)
        base_test = None
        if args.base_test:
            base_test = load_labelled([args.base_test], classes=classes, split="test")
            if args.base_test_limit and len(base_test.paths) > args.base_test_limit:
                keep = np.sort(np.random.default_rng(0).permutation(len(base_test.paths))[: args.base_test_limit])
                base_test = LabelledImages(
                    classes=classes,
                    paths=[base_test.paths[i] for i in keep],
                    labels_list=[base_test.labels_list[i] for i in keep],
                    labelled_boxes=[base_test.labelled_boxes[i] for i in keep],
                    laboratories=[base_test.laboratories[i] for i in keep],
                )
        results["test_cells"] = dict(Counter(classes[label] for label in test_set.labels_list))
        results["train_cells_available"] = {k: len(v) for k, v in sorted(by_class.items())}
        results["base_accuracy"] = accuracy_on(args.base_model, test_set)
        if base_test is not None:
            results["base_test"] = {"data": str(args.base_test), "n": len(base_test.paths)}
            results["base_test"]["base_accuracy"] = accuracy_on(args.base_model, base_test)
        curve = []
        for k in shots:
            row = {"cells_per_class": k, "accuracy": [], "seconds": [], "cells": []}
            if base_test is not None:
                row["base_test_accuracy"] = []
            for draw in range(draws):
                rng = np.random.default_rng([k, draw])
                chosen = []
                for label, indices in sorted(by_class.items()):
                    picked = rng.choice(indices, size=min(k, len(indices)), replace=False)
                    chosen += [(train_all.paths[i], classes.index(label)) for i in picked]
                data = ImageDataset(
                    classes=classes,
                    paths=[p for p, _ in chosen],
                    labels=np.asarray([c for _, c in chosen], dtype=np.int64),
                    skipped=[],
                )
                output = scratch / f"adapted-{k}-{draw}"
                config.seed = draw
                adapted = adapt_model(
                    base_dir=args.base_model, data=data, output_dir=output, name=f"curve-{k}-{draw}", config=config
                )
                row["seconds"].append(round(adapted.seconds, 1))
                row["cells"].append(len(data))
                row["accuracy"].append(accuracy_on(output, test_set))
                if base_test is not None:
                    row["base_test_accuracy"].append(accuracy_on(output, base_test))
                shutil.rmtree(output, ignore_errors=True)
                if not args.json:
                    print(
                        f"k={k} draw={draw}: accuracy {row['accuracy'][-1]:.4f} ({row['seconds'][-1]} s)",
                        file=sys.stderr,
                    )
            row["mean_accuracy"] = float(np.mean(row["accuracy"]))
            row["std_accuracy"] = float(np.std(row["accuracy"]))
            if base_test is not None:
                row["mean_base_test_accuracy"] = float(np.mean(row["base_test_accuracy"]))
            curve.append(row)
        results["curve"] = curve
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


if __name__ == "__main__":
    output = main()
    if "--json" in sys.argv:
        print(json.dumps(output))
    else:
        print(json.dumps(output, indent=2))
