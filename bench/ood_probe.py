"""How often the bundled model flags inputs unlike its training data, against in-distribution cells.

    .venv/bin/python bench/ood_probe.py [--model-dir inference/bundled] [--per-class 25] [--json]

Probes are built from PBC validation cells (never the test split): a strong stain shift, a hue shift,
a lower magnification (cell shrunk to half size on a smear-coloured background), a higher one (centre
zoom x2), and non-cell images (scikit-image's sample photographs and noise). For each it prints the share
flagged, and the share of wrong answers not flagged (the dangerous case) where a right answer exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def stain_shift(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    density = -np.log((pixels + 1) / 256) * np.array([1.6, 0.7, 1.3])
    return Image.fromarray(np.clip(np.exp(-density) * 256 - 1, 0, 255).astype(np.uint8))


def hue_shift(image: Image.Image) -> Image.Image:
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + 40) % 256
    return Image.fromarray(hsv, mode="HSV").convert("RGB")


def lower_magnification(image: Image.Image) -> Image.Image:
    background = tuple(int(v) for v in np.median(np.asarray(image).reshape(-1, 3), axis=0))
    small = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    return ImageOps.pad(small, image.size, color=background)


def higher_magnification(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)).resize(image.size, Image.Resampling.BICUBIC)


def non_cell_images() -> list[Image.Image]:
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "clock"]
    images = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in names]
    rng = np.random.default_rng(0)
    images += [Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)) for _ in range(5)]
    images += [Image.new("RGB", (224, 224), colour) for colour in ((255, 255, 255), (0, 0, 0), (200, 150, 180))]
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "inference" / "bundled")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "pbc" / "val")
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.test")
    django.setup()
    from inference.predictor import Predictor
    from inference.selectors import version_from_directory

    predictor = Predictor(version_from_directory(args.model_dir))
    cells, labels = [], []
    for class_dir in sorted(p for p in args.data.iterdir() if p.is_dir()):
        for path in sorted(class_dir.glob("*.jpg"))[: args.per_class]:
            with Image.open(path) as image:
                cells.append(image.convert("RGB"))
            labels.append(class_dir.name)
    probes = {
        "in-distribution (val)": cells,
        "stain shift": [stain_shift(c) for c in cells],
        "hue shift": [hue_shift(c) for c in cells],
        "lower magnification (x0.5)": [lower_magnification(c) for c in cells],
        "higher magnification (x2)": [higher_magnification(c) for c in cells],
        "non-cell images": non_cell_images(),
    }
    results = {}
    for name, images in probes.items():
        predictions = predictor.predict(images)
        flagged = np.array([p.flagged for p in predictions])
        row = {"n": len(images), "flagged": round(float(flagged.mean()), 3)}
        if name != "non-cell images":
            correct = np.array([p.label == label for p, label in zip(predictions, labels, strict=True)])
            row["accuracy"] = round(float(correct.mean()), 3)
            row["wrong_and_not_flagged"] = round(float((~correct & ~flagged).mean()), 3)
        else:
            row["wrong_and_not_flagged"] = round(float((~flagged).mean()), 3)
        results[name] = row
    if args.json:
        print(json.dumps(results))
        return
    print("| probe | n | flagged | accuracy | wrong and not flagged |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        print(
            f"| {name} | {row['n']} | {row['flagged']:.1%} | "
            + (f"{row['accuracy']:.1%}" if "accuracy" in row else "n/a")
            + f" | {row['wrong_and_not_flagged']:.1%} |"
        )


if __name__ == "__main__":
    main()
