"""Accuracy on a new laboratory after adapting with 5 / 10 / 25 / 50 labelled cells per class.

    DJANGO_SETTINGS_MODULE=hematovision.settings.local \\
        .venv/bin/python bench/adapt_curve.py --base-model DIR --data olympus --json

Uses olympus as the laboratory the base model has never seen: adapt (``inference.adapt.adapt_model``, the
code `manage.py adapt` runs) on k cells per class drawn from olympus *train* (capped by what exists),
`--draws` random draws per k, then measure accuracy on olympus *test* through the serving predictor.
Optionally (`--base-test DIR`) also on a base test set, to see what adaptation costs the base lab.

Olympus cells: the labelled white cell of each labelled field with exactly one WBC box in BOXES.csv,
cropped square around the box with a margin (the bench's own reader; olympus images never ship).
`--tiny` runs a small setting (one k, one draw, one epoch, a few test cells) to check the script.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OLYMPUS = ROOT.parent / "shared" / "datasets" / "olympus"


def olympus_crops(split: str, *, root: Path = OLYMPUS, margin: float = 0.35) -> list[tuple[Image.Image, str]]:
    """(crop, label) for each labelled field of `split` with exactly one WBC box."""
    boxes = defaultdict(list)
    with open(root / "BOXES.csv", newline="") as stream:
        for row in csv.DictReader(stream):
            if row["class"] == "WBC":
                boxes[row["path"]].append(row)
    crops = []
    with open(root / "MANIFEST.csv", newline="") as stream:
        for row in csv.DictReader(stream):
            if row["split"] != split or not row["label"] or len(boxes[row["path"]]) != 1:
                continue
            box = boxes[row["path"]][0]
            x0, y0, x1, y1 = (int(box[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            with Image.open(root / row["path"]) as field:
                crop = field.convert("RGB").crop(
                    (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
                )
            crops.append((crop, row["label"]))
    return crops


def write_folder(cells: list[tuple[Image.Image, str]], directory: Path, *, prefix: str) -> None:
    for index, (image, label) in enumerate(cells):
        folder = directory / label
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{prefix}-{index:05d}.png")


def accuracy_on(model_dir: Path, dataset) -> float:
    from inference.evaluation import evaluate_images
    from inference.predictor import Predictor
    from inference.selectors import version_from_directory

    predictor = Predictor(version_from_directory(model_dir))
    return float(
        evaluate_images(predictor=predictor, paths=dataset.paths, labels=dataset.labels)["metrics"]["accuracy"]
    )


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
    from inference.artifacts import read_model_metadata
    from inference.data import ImageDataset, load_image_folder

    started = time.perf_counter()
    shots = [int(k) for k in args.shots.split(",")]
    draws, epochs = args.draws, args.epochs
    test_cells = olympus_crops("test")
    train_cells = olympus_crops("train")
    if args.tiny:
        shots, draws, epochs = [2], 1, epochs or 1
        test_cells = test_cells[::4]
    classes = read_model_metadata(args.base_model)["classes"]
    missing = sorted({label for _, label in train_cells + test_cells} - set(classes))
    if missing:
        raise SystemExit(f"the base model has no class {missing}")
    config = AdaptConfig(**({"epochs": epochs} if epochs else {}))

    results = {"base_model": str(args.base_model), "data": args.data, "config": {"epochs": config.epochs}}
    with tempfile.TemporaryDirectory(prefix="adapt-curve-") as scratch:
        scratch = Path(scratch)
        write_folder(test_cells, scratch / "test", prefix="test")
        test_set = load_image_folder([scratch / "test"], classes=classes)
        by_class = defaultdict(list)
        for index, (_, label) in enumerate(train_cells):
            by_class[label].append(index)
        write_folder(train_cells, scratch / "train", prefix="train")
        train_all = load_image_folder([scratch / "train"], classes=classes)
        path_of = {p.name: p for p in train_all.paths}
        base_test = None
        if args.base_test:
            base_test = load_image_folder([args.base_test], classes=classes)
            if args.base_test_limit and len(base_test) > args.base_test_limit:
                keep = np.random.default_rng(0).permutation(len(base_test))[: args.base_test_limit]
                base_test = base_test.subset(np.sort(keep))
        results["test_cells"] = test_set.counts()
        results["train_cells_available"] = {k: len(v) for k, v in sorted(by_class.items())}
        results["base_accuracy"] = accuracy_on(args.base_model, test_set)
        if base_test is not None:
            results["base_test"] = {"data": str(args.base_test), "n": len(base_test)}
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
                    chosen += [(path_of[f"train-{i:05d}.png"], classes.index(label)) for i in picked]
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
