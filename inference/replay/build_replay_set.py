"""Build the replay set shipped with the platform: a small, licensed subset of the PBC training split.

Adaptation (``inference/adapt.py``) fine-tunes the active model on a laboratory's cells together with
these base-training cells, so the classes and stains it learnt first are not forgotten. Only the PBC
*train* split is used (never val/test, never the olympus images); files are chosen deterministically by
the sha256 of their names, resized to 128 px (shorter side, centre crop) and saved as JPEG quality 90.

    python inference/replay/build_replay_set.py --source ../shared/datasets/pbc/train --per-class 100
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "pbc"
SUFFIXES = {".jpg", ".jpeg", ".png"}


def chosen_files(folder: Path, per_class: int) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    return sorted(files, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())[:per_class]


def build(*, source: Path, output: Path, per_class: int, size: int) -> dict[str, int]:
    if source.name != "train":
        raise SystemExit(f"{source} is not a train split: the replay set must never hold validation or test images")
    if output.exists():
        shutil.rmtree(output)
    counts = {}
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        target = output / folder.name
        target.mkdir(parents=True)
        files = chosen_files(folder, per_class)
        for path in files:
            with Image.open(path) as image:
                small = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.LANCZOS)
            small.save(target / f"{path.stem}.jpg", format="JPEG", quality=90)
        counts[folder.name] = len(files)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=HERE.parents[2] / "shared" / "datasets" / "pbc" / "train")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    counts = build(source=args.source.resolve(), output=args.output, per_class=args.per_class, size=args.size)
    for name, count in counts.items():
        print(f"{name}: {count}")


if __name__ == "__main__":
    main()
