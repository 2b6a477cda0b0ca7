"""Does cell finding (inference/locate.py) still give the same results as a committed version of it?

    .venv/bin/python bench/locate_equivalence.py [--against REV] [--lisc 200] [--json]

Loads ``inference/locate.py`` as it was at ``REV`` (``git show``; default: the version before the red-cell
measurement was limited to what uses it) beside the current one, and runs both through the upload path
(`inference.analysis.analyse_images` with the bundled model) on every PBC validation crop, every olympus
validation field, a sample of LISC training cells and the non-cell probe (`bench/noncell_probe.py --set dev`).
Per image it compares the number of cells, their kinds, labels and flag reasons, their boxes (within 2 px
and IoU >= 0.9), the no-cell-found decision, the layout and the rendered-image check; differences in the
reported scale (µm per pixel and its source) are counted apart, since the scale of a crop that is classified
whole is not used. Exits 1 when any compared result differs.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"
# The last commit before the red-cell measurement was limited to where its scale is used.
REFERENCE = "4d15f8d"
BATCH = 32


def reference_module(revision: str):
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:inference/locate.py"], check=True, capture_output=True, text=True
    ).stdout
    spec = importlib.util.spec_from_loader("locate_reference", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:inference/locate.py", "exec"), module.__dict__)  # noqa: S102
    return module


def image_sets(lisc: int):
    sys.path.insert(0, str(ROOT / "bench"))
    from noncell_probe import build_probe

    from inference.data import load_rgb

    pbc = sorted((SHARED / "pbc" / "val").rglob("*.jpg"))
    olympus = sorted((SHARED / "olympus" / "images" / "val").glob("*.jpg"))
    with open(SHARED / "lisc" / "MANIFEST.csv", newline="", encoding="utf-8") as stream:
        rows = [row["path"] for row in csv.DictReader(stream) if row["split"] == "train"]
    step = max(1, len(rows) // lisc)
    lisc_paths = [SHARED / "lisc" / path for path in rows[::step][:lisc]]
    return {
        "pbc_val": [(str(path.relative_to(SHARED)), lambda path=path: load_rgb(path)) for path in pbc],
        "olympus_val": [(str(path.relative_to(SHARED)), lambda path=path: load_rgb(path)) for path in olympus],
        "lisc_train_sample": [(str(path.relative_to(SHARED)), lambda path=path: load_rgb(path)) for path in lisc_paths],
        "noncell_dev": [
            (f"{kind}#{number}", lambda image=image: image) for number, (kind, image) in enumerate(build_probe("dev"))
        ],
    }


def compare(name: str, ours, theirs) -> list[str]:
    from inference.locate import _iou

    problems = []
    if len(ours.cells) != len(theirs.cells):
        problems.append(f"cells {len(theirs.cells)} -> {len(ours.cells)}")
    if bool(ours.cells) != bool(theirs.cells):
        problems.append("no-cell-found decision")
    if ours.layout != theirs.layout:
        problems.append(f"layout {theirs.layout} -> {ours.layout}")
    if ours.main_cell != theirs.main_cell:
        problems.append(f"main cell {theirs.main_cell} -> {ours.main_cell}")
    for number, (a, b) in enumerate(zip(ours.cells, theirs.cells, strict=False)):
        if a.kind != b.kind:
            problems.append(f"cell {number} kind {b.kind} -> {a.kind}")
        if max(abs(x - y) for x, y in zip(a.box, b.box, strict=True)) > 2 or _iou(a.box, b.box) < 0.9:
            problems.append(f"cell {number} box {b.box} -> {a.box}")
        pa, pb = a.prediction, b.prediction
        if pa.label != pb.label:
            problems.append(f"cell {number} label {pb.label} -> {pa.label}")
        if tuple(pa.flag_reasons) != tuple(pb.flag_reasons) or pa.flagged != pb.flagged:
            problems.append(f"cell {number} flags {list(pb.flag_reasons)} -> {list(pa.flag_reasons)}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default=REFERENCE, help="git revision of inference/locate.py to compare with")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "inference" / "bundled")
    parser.add_argument("--lisc", type=int, default=200, help="LISC training cells sampled evenly")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")
    import django

    django.setup()
    from inference import analysis
    from inference.predictor import Predictor
    from inference.selectors import version_from_directory

    reference = reference_module(args.against)
    predictor = Predictor(version_from_directory(args.model_dir))
    result = {"against": args.against, "model": predictor.version.name, "sets": {}}
    equivalent = True
    for set_name, items in image_sets(args.lisc).items():
        row = {"images": len(items), "cells": 0, "differences": 0, "scale_differences": 0, "examples": []}
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            images = [load() for _, load in batch]
            ours = analysis.analyse_images(images, predictor=predictor)
            with (
                mock.patch.object(analysis, "locate_cells", reference.locate_cells),
                mock.patch.object(analysis, "classification_windows", reference.classification_windows),
            ):
                theirs = analysis.analyse_images(images, predictor=predictor)
            for (name, _), a, b in zip(batch, ours, theirs, strict=True):
                row["cells"] += len(a.cells)
                problems = compare(name, a, b)
                if problems:
                    row["differences"] += 1
                    row["examples"].append({"image": name, "differences": problems})
                if (a.um_per_pixel, a.scale_source) != (b.um_per_pixel, b.scale_source):
                    row["scale_differences"] += 1
        equivalent = equivalent and row["differences"] == 0
        result["sets"][set_name] = row
        if not args.json:
            print(f"{set_name}: {row['images']} images, {row['cells']} cells, {row['differences']} differing, "
                  f"{row['scale_differences']} with another reported scale", flush=True)  # fmt: skip
            for example in row["examples"][:20]:
                print(f"  {example['image']}: {'; '.join(example['differences'])}")
    result["equivalent"] = equivalent
    if args.json:
        print(json.dumps(result))
    sys.exit(0 if equivalent else 1)


if __name__ == "__main__":
    main()
