"""How many images that are not blood cells get a confident (unflagged) class, through the upload path.

    .venv/bin/python bench/noncell_probe.py [--model-dir inference/bundled] [--json] [--save DIR]

Builds a probe set of at least 300 images, none of them a leukocyte or platelet, and runs each through
`inference.analysis.analyse_images` as an upload would be: an image passes when no cell is found or every
cell found is flagged; it fails when any found cell gets a confident class. Kinds:
- photos: crops of scikit-image's and scikit-learn's sample photographs at several scales
- screenshots: the platform's own page screenshots (docs/screenshots) cut into tiles, and drawn UI mock-ups
- solid colours and gradients (purple ones included), noise (uniform, Gaussian, coloured, salt and pepper)
- debris: irregular specks and streaks of stain-like colour on a smear-coloured background
- red cells only: windows of olympus validation and test fields that hold no leukocyte or platelet box
- tiny: images of 4 to 14 pixels
Nothing here is used for training.

Two sets. `--set dev` (the default, seed 0) is the set whose failures the third and fourth sessions looked
at while designing the not-a-cell rules (inference/analysis.py): read its figures as development figures.
`--set holdout` (seed 1) was written after those rules and run once per model: other random mock-ups,
colours, noise, debris and red-cell windows, mock-ups saved as JPEG (a screenshot shared by e-mail), photo
sources the dev set does not use (scikit-image's clock, cell, phantom, blobs and checkerboard, matplotlib's
sample photographs) and the same photos tinted with a stain-like purple.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"


def photos(rng) -> list[Image.Image]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = [
        "astronaut", "camera", "cat", "chelsea", "coffee", "coins", "colorwheel", "grass", "gravel", "horse",
        "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina", "rocket", "skin",
        "text", "brick", "rocket",
    ]  # fmt: skip
    sources = []
    for name in dict.fromkeys(names):
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            array = loader()
        except (ModuleNotFoundError, OSError) as exc:  # a sample that must be downloaded is left out
            print(f"sample {name} left out: {type(exc).__name__}", file=sys.stderr)
            continue
        image = Image.fromarray(np.asarray(array)).convert("RGB")
        sources.append(image)
    sources += [Image.fromarray(array).convert("RGB") for array in load_sample_images().images]
    out = []
    for image in sources:
        for _ in range(6):
            side = int(min(image.size) * rng.uniform(0.3, 1.0))
            left = int(rng.integers(0, image.width - side + 1))
            top = int(rng.integers(0, image.height - side + 1))
            out.append(image.crop((left, top, left + side, top + side)).resize((360, 360)))
    return out


def holdout_photos(rng) -> list[Image.Image]:
    import matplotlib
    from skimage import data

    sources = [Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
               for name in ("clock", "cell", "shepp_logan_phantom", "checkerboard")]  # fmt: skip
    sources.append(Image.fromarray((data.binary_blobs(length=512, rng=0) * 255).astype(np.uint8)).convert("RGB"))
    samples = Path(matplotlib.get_data_path()) / "sample_data"
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        if (samples / name).is_file():
            sources.append(Image.open(samples / name).convert("RGB"))
    out = []
    for image in sources:
        for index in range(8):
            side = int(min(image.size) * rng.uniform(0.3, 1.0))
            left = int(rng.integers(0, image.width - side + 1))
            top = int(rng.integers(0, image.height - side + 1))
            crop = image.crop((left, top, left + side, top + side)).resize((360, 360))
            if index % 2:  # tinted like a stained smear: dark parts purple, light parts pink-white
                grey = np.asarray(crop.convert("L"), dtype=np.float64)[..., None] / 255.0
                dark, light = np.array([95.0, 40.0, 140.0]), np.array([240.0, 215.0, 225.0])
                crop = Image.fromarray((dark * (1 - grey) + light * grey).astype(np.uint8))
            out.append(crop)
    return out


def jpeg_screenshots(rng) -> list[Image.Image]:
    import io

    out = []
    for image in screenshots(rng)[:40]:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(60, 90)))
        out.append(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return out


def screenshots(rng) -> list[Image.Image]:
    """Drawn user-interface mock-ups: panels, buttons, text, icons (screenshots of the platform itself
    show cell thumbnails, which are cells)."""
    out = []
    for _ in range(60):
        image = Image.new("RGB", (640, 480), tuple(int(v) for v in rng.integers(200, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = int(rng.integers(0, 600)), int(rng.integers(0, 450))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            w, h = int(rng.integers(20, 200)), int(rng.integers(10, 60))
            if rng.random() < 0.2:
                draw.ellipse((x, y, x + h, y + h), fill=colour)  # an icon or avatar
            else:
                draw.rounded_rectangle((x, y, x + w, y + h), radius=int(rng.integers(0, 8)), fill=colour)
            draw.text((x + 4, y + 2), "HematoVision", fill=(0, 0, 0))
        out.append(image)
    return out


def colours(rng) -> list[Image.Image]:
    out = [Image.new("RGB", (360, 360), tuple(int(v) for v in rng.integers(0, 256, 3))) for _ in range(30)]
    out += [Image.new("RGB", (360, 360), colour) for colour in [(110, 40, 150), (90, 30, 120), (160, 90, 200)]]
    for _ in range(20):
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, 360)[None, :, None]
        out.append(Image.fromarray((a * (1 - ramp) + b * ramp).repeat(360, 0).astype(np.uint8)))
    return out


def noise(rng) -> list[Image.Image]:
    out = []
    for _ in range(10):
        out.append(Image.fromarray(rng.integers(0, 256, (360, 360, 3), dtype=np.uint8)))
        out.append(Image.fromarray(np.clip(rng.normal(128, 50, (360, 360, 3)), 0, 255).astype(np.uint8)))
        base = rng.integers(0, 256, 3)
        out.append(Image.fromarray(np.clip(base + rng.normal(0, 25, (360, 360, 3)), 0, 255).astype(np.uint8)))
        salt = np.full((360, 360, 3), 230, np.uint8)
        salt[rng.random((360, 360)) < 0.05] = 0
        out.append(Image.fromarray(salt))
    return out


def debris(rng) -> list[Image.Image]:
    out = []
    for _ in range(40):
        image = Image.new("RGB", (360, 360), (236, 222, 210))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 30))):
            x, y = rng.integers(0, 360, 2)
            size = int(rng.integers(1, 6))
            colour = (int(rng.integers(60, 140)), int(rng.integers(20, 80)), int(rng.integers(100, 180)))
            if rng.random() < 0.5:
                draw.ellipse((x, y, x + size, y + size), fill=colour)
            else:
                draw.line((x, y, x + rng.integers(-60, 60), y + rng.integers(-60, 60)), fill=colour, width=1)
        out.append(image)
    return out


def red_cells_only(rng, limit: int = 80) -> list[Image.Image]:
    root = SHARED / "olympus"
    if not (root / "BOXES.csv").is_file():
        return []
    cells: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    with open(root / "BOXES.csv", newline="") as stream:
        for row in csv.DictReader(stream):
            if row["class"] in ("WBC", "PLATELET"):
                cells[row["path"]].append(tuple(int(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")))
    with open(root / "MANIFEST.csv", newline="") as stream:
        fields = [row["path"] for row in csv.DictReader(stream) if row["split"] in ("val", "test") and row["boxes"]]
    out = []
    for path in rng.permutation(fields):
        image = Image.open(root / path).convert("RGB")
        side = 200
        for _ in range(20):
            x, y = int(rng.integers(0, image.width - side)), int(rng.integers(0, image.height - side))
            window = (x - 10, y - 10, x + side + 10, y + side + 10)
            if not any(
                b[0] < window[2] and b[2] > window[0] and b[1] < window[3] and b[3] > window[1] for b in cells[path]
            ):
                out.append(image.crop((x, y, x + side, y + side)))
                break
        if len(out) >= limit:
            break
    return out


def tiny(rng) -> list[Image.Image]:
    return [Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for s in range(4, 15)]


PROBE_SETS = {
    "dev": (0, [
        ("photo", photos), ("screenshot", screenshots), ("colour", colours), ("noise", noise),
        ("debris", debris), ("red_cells_only", red_cells_only), ("tiny", tiny),
    ]),
    "holdout": (1, [
        ("photo", holdout_photos), ("screenshot", screenshots), ("screenshot_jpeg", jpeg_screenshots),
        ("colour", colours), ("noise", noise), ("debris", debris), ("red_cells_only", red_cells_only),
        ("tiny", tiny),
    ]),
}  # fmt: skip


def build_probe(name: str = "dev") -> list[tuple[str, Image.Image]]:
    seed, kinds = PROBE_SETS[name]
    rng = np.random.default_rng(seed)
    probe = []
    for kind, make in kinds:
        probe += [(kind, image) for image in make(rng)]
    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "inference" / "bundled")
    parser.add_argument("--set", choices=sorted(PROBE_SETS), default="dev", dest="probe_set")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save", type=Path, help="also write the probe images (and failures) here")
    args = parser.parse_args()

    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")
    import django

    django.setup()
    from inference.analysis import analyse_images
    from inference.predictor import Predictor
    from inference.selectors import version_from_directory

    predictor = Predictor(version_from_directory(args.model_dir))
    probe = build_probe(args.probe_set)
    totals, confident, no_cell, reasons = Counter(), Counter(), Counter(), Counter()
    failures = []
    for start in range(0, len(probe), 16):
        chunk = probe[start : start + 16]
        for (kind, image), analysis in zip(
            chunk, analyse_images([im for _, im in chunk], predictor=predictor), strict=True
        ):
            totals[kind] += 1
            if not analysis.cells:
                no_cell[kind] += 1
            for cell in analysis.cells:
                reasons.update(cell.prediction.flag_reasons)
            unflagged = [cell for cell in analysis.cells if not cell.prediction.flagged]
            if unflagged:
                confident[kind] += 1
                failures.append((kind, image, unflagged[0].prediction))
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for index, (kind, image, prediction) in enumerate(failures):
            image.save(args.save / f"fail-{index:03d}-{kind}-{prediction.label}-{prediction.confidence:.2f}.png")
    n = sum(totals.values())
    result = {
        "model": predictor.version.name,
        "set": args.probe_set,
        "images": n,
        "confident": sum(confident.values()),
        "confident_fraction": sum(confident.values()) / n,
        "no_cell_found_fraction": sum(no_cell.values()) / n,
        "by_kind": {
            kind: {"images": totals[kind], "confident": confident[kind], "no_cell_found": no_cell[kind]}
            for kind in totals
        },
        "flag_reasons": dict(reasons),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{predictor.version.name}: {result['confident']} of {n} non-cell images got a confident class "
          f"({result['confident_fraction']:.1%}); no cell found in {result['no_cell_found_fraction']:.1%}")  # fmt: skip
    for kind, row in result["by_kind"].items():
        print(
            f"  {kind:15s} {row['images']:4d} images, {row['confident']:3d} confident, {row['no_cell_found']:3d} none"
        )


if __name__ == "__main__":
    main()
