"""Time to find and classify every cell of whole fields and of single-cell crops (the upload path's ML part).

    .venv/bin/python bench/field_speed.py [--model-dir inference/bundled] [--fields 40] [--json]

Fields: olympus validation fields (640 x 480); crops: PBC validation images. Prints p50/p95 milliseconds per
image for locating alone and for locating + classifying, one image per call (the latency a single upload sees);
"locate_cpu" is locating's CPU time (steadier than wall time on a busy machine) and "flat_fraction" the
rendered-image check on its own (part of locating whenever a cell is found).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"


def percentiles(values: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(values, 50)), 2), "p95_ms": round(float(np.percentile(values, 95)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "inference" / "bundled")
    parser.add_argument("--fields", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")
    import django

    django.setup()
    from inference.analysis import analyse_images
    from inference.data import load_rgb
    from inference.locate import flat_fraction, locate_cells
    from inference.predictor import Predictor
    from inference.selectors import version_from_directory

    predictor = Predictor(version_from_directory(args.model_dir))
    sets = {
        "field": sorted((SHARED / "olympus" / "images" / "val").glob("*.jpg"))[: args.fields],
        "crop": sorted((SHARED / "pbc" / "val").rglob("*.jpg"))[:: 1329 // args.fields + 1][: args.fields],
    }
    result = {"model": predictor.version.name}
    for name, paths in sets.items():
        images = [load_rgb(path) for path in paths]
        analyse_images(images[:2], predictor=predictor)  # warm up
        locate, locate_cpu, flat, total, cells = [], [], [], [], 0
        for image in images:
            started, started_cpu = time.perf_counter(), time.process_time()
            locate_cells(image)
            locate.append((time.perf_counter() - started) * 1000)
            locate_cpu.append((time.process_time() - started_cpu) * 1000)
            started = time.perf_counter()
            flat_fraction(image)
            flat.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            cells += len(analyse_images([image], predictor=predictor)[0].cells)
            total.append((time.perf_counter() - started) * 1000)
        result[name] = {
            "images": len(images),
            "cells": cells,
            "locate": percentiles(locate),
            "locate_cpu": percentiles(locate_cpu),
            "flat_fraction": percentiles(flat),
            "total": percentiles(total),
        }
    if args.json:
        print(json.dumps(result))
    else:
        for name in sets:
            row = result[name]
            print(f"{name}: {row['images']} images, {row['cells']} cells; locate p50 {row['locate']['p50_ms']} ms "
                  f"(CPU {row['locate_cpu']['p50_ms']} ms, flat-pixel check {row['flat_fraction']['p50_ms']} ms), "
                  f"locate + classify p50 {row['total']['p50_ms']} ms, p95 {row['total']['p95_ms']} ms")  # fmt: skip


if __name__ == "__main__":
    main()
