"""Are two models' accuracies on the same cells different? Exact McNemar test through the upload path.

    DJANGO_SETTINGS_MODULE=hematovision.settings.local .venv/bin/python bench/mcnemar.py \\
        --a MODEL_DIR --b MODEL_DIR --data ../shared/datasets/pbc/test [--split test] [--json]

Both model folders classify every labelled image of ``--data`` (class folders or the manifest layout, as
`manage.py evaluate` reads them) through ``inference.evaluation.evaluate_images``; the cells one model gets
right and the other wrong are counted both ways and tested with the exact binomial (McNemar) test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="first model folder")
    parser.add_argument("--b", type=Path, required=True, help="second model folder (same classes)")
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--split", default="test", help="split of manifest-layout data")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import django

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")
    django.setup()
    from scipy.stats import binomtest

    from inference.evaluation import evaluate_images
    from inference.field_data import load_labelled
    from inference.predictor import Predictor
    from inference.selectors import version_from_directory

    predictors = [Predictor(version_from_directory(folder)) for folder in (args.a, args.b)]
    if predictors[0].classes != predictors[1].classes:
        raise SystemExit("the two models have different classes")
    data = load_labelled(args.data, classes=predictors[0].classes, split=args.split)
    right, accuracy = [], []
    for predictor in predictors:
        result = evaluate_images(predictor=predictor, **data.evaluation_arguments())
        right.append(np.argmax(result["probabilities"], axis=1) == data.labels)
        accuracy.append(float(result["metrics"]["accuracy"]))
    only_a, only_b = int(np.sum(right[0] & ~right[1])), int(np.sum(~right[0] & right[1]))
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {
        "a": predictors[0].version.name,
        "b": predictors[1].version.name,
        "n": len(data.paths),
        "accuracy_a": accuracy[0],
        "accuracy_b": accuracy[1],
        "right_only_a": only_a,
        "right_only_b": only_b,
        "mcnemar_p": float(p_value),
    }


if __name__ == "__main__":
    output = main()
    print(json.dumps(output) if "--json" in sys.argv else json.dumps(output, indent=2))
