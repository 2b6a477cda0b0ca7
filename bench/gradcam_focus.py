"""How much of the Grad-CAM heat falls on the white cell, for the last feature map and for the finer one.

    PYTHONPATH=. .venv/bin/python bench/gradcam_focus.py [--model-dir inference/bundled] [--per-class 5] [--json]

PBC test cells of the leukocyte classes (the white cell is centred, red cells around it). The white cell is
segmented by colour (purple: blue well above green, not the pink of red cells or the pale background) and the
largest connected region near the centre kept. For each map (upsampled bicubically to the image, stretched to
[0, 1]) it prints the share of the total heat that lies on the white cell, against the cell's share of the
image (what a uniform map would score), averaged over the cells.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LEUKOCYTES = ["NEUTROPHIL", "EOSINOPHIL", "BASOPHIL", "LYMPHOCYTE", "MONOCYTE", "IG"]


def white_cell_mask(rgb: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    pixels = rgb.astype(np.int32)
    purple = (pixels[..., 2] - pixels[..., 1] > 45) & (pixels[..., 0] < 215)
    purple = ndimage.binary_closing(purple, iterations=3)
    purple = ndimage.binary_fill_holes(purple)
    labels, count = ndimage.label(purple)
    if count == 0:
        return purple
    height, width = purple.shape
    centre = labels[
        height // 2 - height // 8 : height // 2 + height // 8, width // 2 - width // 8 : width // 2 + width // 8
    ]
    ids, sizes = np.unique(centre[centre > 0], return_counts=True)
    keep = ids[np.argmax(sizes)] if len(ids) else np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return labels == keep


def stretched(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    low, high = float(heat.min()), float(heat.max())
    heat = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
    resized = Image.fromarray(heat.astype(np.float32), mode="F").resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=str(ROOT / "inference" / "bundled"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "pbc" / "test"))
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")
    import django

    django.setup()
    import keras

    from inference.gradcam import fine_feature_layer_name, gradcam_heatmap
    from inference.model_folder import read_model_metadata
    from inference.preprocessing import preprocess

    metadata = read_model_metadata(Path(args.model_dir))
    model = keras.models.load_model(Path(args.model_dir) / metadata["keras_artifact"], compile=False)
    fine = fine_feature_layer_name(model)
    shares = {"last": [], "fine": []}
    cell_fractions = []
    for label in LEUKOCYTES:
        for path in sorted((Path(args.data) / label).glob("*.jpg"))[: args.per_class]:
            image = Image.open(path).convert("RGB")
            rgb = np.asarray(image)
            mask = white_cell_mask(rgb)
            cell_fractions.append(float(mask.mean()))
            array = preprocess(image, metadata["preprocessing"])
            index = metadata["classes"].index(label)
            for key, layer in (("last", None), ("fine", fine)):
                heat = stretched(gradcam_heatmap(model, array, index, layer), image.size)
                shares[key].append(float(heat[mask].sum() / max(heat.sum(), 1e-9)))
    result = {
        "cells": len(cell_fractions),
        "fine_layer": fine,
        "cell_share_of_image": round(float(np.mean(cell_fractions)), 3),
        "heat_on_cell_last_layer": round(float(np.mean(shares["last"])), 3),
        "heat_on_cell_fine_layer": round(float(np.mean(shares["fine"])), 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
