"""What adaptation's imaging-profile update does to ``unfamiliar_imaging``: a base profile gains a laboratory
fitted on N of its training windows per class (as ``adapt_model`` does with the lab's cells trained on), and
the share of that lab's validation windows flagged before and after is printed, with other folders' shares.

    .venv/bin/python bench/imaging_adapted.py --profile DIR --lab-train FOLDER --per-class 10 50 \\
        --data NAME=FOLDER [--data NAME=FOLDER ...] [--prior-windows 40] [--json]

The lab's training windows are taken per class folder, the first by file-name hash (as the replay set is).
Validation folders only: never a test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.adapt import hash_fraction  # noqa: E402
from inference.data import load_rgb  # noqa: E402
from inference.imaging import (  # noqa: E402
    ADAPTED_PRIOR_WINDOWS,
    ImagingProfile,
    image_files,
    imaging_profiles,
    with_laboratory,
)
from inference.model_folder import IMAGING_PROFILE_FILE  # noqa: E402


def first_per_class(root: Path, count: int) -> list[Path]:
    chosen = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        chosen += sorted(image_files([folder]), key=lambda p: hash_fraction(p.name))[:count]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, required=True)
    parser.add_argument("--lab-train", type=Path, required=True)
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--prior-windows", type=float, nargs="+", default=[ADAPTED_PRIOR_WINDOWS])
    parser.add_argument("--data", action="append", required=True, help="NAME=FOLDER (validation windows)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = ImagingProfile.load(args.profile / IMAGING_PROFILE_FILE)
    folders = dict(item.partition("=")[::2] for item in args.data)
    features = {name: imaging_profiles([load_rgb(p) for p in image_files([Path(f)])]) for name, f in folders.items()}

    def shares(profile: ImagingProfile) -> dict:
        return {name: float(np.mean(profile.scores_of_profiles(f) > profile.threshold)) for name, f in features.items()}

    results = {
        "profile": str(args.profile),
        "threshold": base.threshold,
        "windows": {n: len(f) for n, f in features.items()},
    }
    results["before"] = shares(base)
    results["after"] = []
    for per_class in args.per_class:
        paths = first_per_class(args.lab_train, per_class)
        lab = imaging_profiles([load_rgb(p) for p in paths])
        for prior in args.prior_windows:
            adapted = with_laboratory(base, "adapted", lab, prior_windows=prior)
            results["after"].append(
                {
                    "per_class": per_class,
                    "windows": len(paths),
                    "prior_windows": prior,
                    "flagged_share": shares(adapted),
                }
            )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"profile {args.profile} ({', '.join(base.laboratories)}), threshold {base.threshold:.3f}")
    print("before: " + ", ".join(f"{n} {100 * s:.1f}%" for n, s in results["before"].items()))
    for row in results["after"]:
        flagged = ", ".join(f"{n} {100 * s:.1f}%" for n, s in row["flagged_share"].items())
        print(f"after {row['per_class']}/class ({row['windows']} windows, prior {row['prior_windows']:g}): {flagged}")


if __name__ == "__main__":
    main()
