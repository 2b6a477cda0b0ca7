"""How many windows of each folder an imaging profile flags ``unfamiliar_imaging``, and its cost per window.

    .venv/bin/python bench/imaging_flagged.py --profile DIR --data NAME=FOLDER [--data NAME=FOLDER ...] [--json]

``DIR`` holds ``imaging.npz`` (a model folder, or a folder written by ``fit_imaging_profile --output``);
each FOLDER holds classified windows (class sub-folders or images directly), read as they are: PBC crops,
LISC windows, the olympus cells cut at the canonical scale. Cost is CPU time (``time.process_time``) of
the statistics and the score, so other work on the machine does not inflate it much.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.data import load_rgb  # noqa: E402
from inference.imaging import ImagingProfile, image_files  # noqa: E402
from inference.model_folder import IMAGING_PROFILE_FILE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, required=True)
    parser.add_argument("--data", action="append", required=True, help="NAME=FOLDER")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    profile = ImagingProfile.load(args.profile / IMAGING_PROFILE_FILE)
    results = {"profile": str(args.profile), "laboratories": list(profile.laboratories), "threshold": profile.threshold}
    total_cpu, total_windows = 0.0, 0
    for item in args.data:
        name, _, folder = item.partition("=")
        windows = [load_rgb(path) for path in image_files([Path(folder)])]
        started = time.process_time()
        scores = profile.scores(windows)
        total_cpu += time.process_time() - started
        total_windows += len(windows)
        results[name] = {
            "windows": len(windows),
            "flagged": int(np.sum(scores > profile.threshold)),
            "flagged_share": float(np.mean(scores > profile.threshold)) if len(windows) else 0.0,
            "median_score": float(np.median(scores)) if len(windows) else None,
        }
    results["cpu_ms_per_window"] = 1000.0 * total_cpu / max(1, total_windows)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"profile {args.profile} ({', '.join(profile.laboratories)}), threshold {profile.threshold:.3f}")
    for item in args.data:
        name = item.partition("=")[0]
        row = results[name]
        print(f"{name:24s} {row['flagged']:5d} / {row['windows']:5d} flagged ({100 * row['flagged_share']:.1f}%)")
    print(f"CPU {results['cpu_ms_per_window']:.3f} ms per window")


if __name__ == "__main__":
    main()
