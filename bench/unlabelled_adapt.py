"""Does a laboratory's own *unlabelled* cells move the model toward it? (issue 11, item 4)

    DJANGO_SETTINGS_MODULE=hematovision.settings.local \\
        .venv/bin/python bench/unlabelled_adapt.py --base-model DIR [--per-class 50] [--json]

Self-training, measured on a laboratory the base model has never seen (olympus): the base model classifies
the labelled cell window of every olympus *train* field (``field_data.export_cell_windows``, the labels are
NOT used for training); the cells it classifies confidently (unflagged) become pseudo-labelled training
cells, at most ``--per-class`` per predicted class; ``inference.adapt.adapt_model`` (what `manage.py adapt`
runs) fine-tunes on them with the replay set; base and self-trained model are both measured on every
labelled olympus *test* field through the upload path. The true labels of the pseudo-labelled cells are
used only to report how many pseudo-labels were right.

Batch-norm re-estimation, the other common unlabelled method, does not apply: the shipped network's
batch normalisation is folded into its convolutions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OLYMPUS = ROOT.parent / "shared" / "datasets" / "olympus"


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", type=Path, required=True, help="model folder (metadata.json, model.keras)")
    parser.add_argument("--per-class", type=int, default=50, help="at most this many pseudo-labelled cells a class")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import os

    import django

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")
    django.setup()
    from inference.adapt import AdaptConfig, adapt_model
    from inference.data import ImageDataset, load_image_folder, load_rgb
    from inference.evaluation import evaluate_images
    from inference.field_data import export_cell_windows, load_labelled
    from inference.model_folder import read_model_metadata
    from inference.predictor import Predictor
    from inference.selectors import version_from_directory

    def test_metrics(model_dir: Path) -> dict:
        predictor = Predictor(version_from_directory(model_dir))
        metrics = evaluate_images(predictor=predictor, **test_set.evaluation_arguments())["metrics"]
        return {key: metrics[key] for key in ("n", "accuracy", "flagged_fraction", "accuracy_unflagged")}

    started = time.perf_counter()
    classes = read_model_metadata(args.base_model)["classes"]
    test_set = load_labelled([OLYMPUS], classes=classes, split="test")
    config = AdaptConfig(**({"epochs": args.epochs} if args.epochs else {}))
    result = {"base_model": str(args.base_model), "per_class": args.per_class}
    with tempfile.TemporaryDirectory(prefix="unlabelled-adapt-") as scratch:
        scratch = Path(scratch)
        export_cell_windows(OLYMPUS, split="train", output_dir=scratch / "train")
        cells = load_image_folder([scratch / "train"], classes=classes)
        predictor = Predictor(version_from_directory(args.base_model))
        predictions = []
        for start in range(0, len(cells), 64):
            predictions += predictor.predict([load_rgb(path) for path in cells.paths[start : start + 64]])
        confident = defaultdict(list)
        for index, prediction in enumerate(predictions):
            if not prediction.flagged:
                confident[prediction.label].append(index)
        rng = np.random.default_rng(0)
        chosen = []
        for label, indices in sorted(confident.items()):
            picked = rng.choice(indices, size=min(args.per_class, len(indices)), replace=False)
            chosen += [(int(index), classes.index(label)) for index in picked]
        pseudo = ImageDataset(
            classes=classes,
            paths=[cells.paths[index] for index, _ in chosen],
            labels=np.asarray([label for _, label in chosen], dtype=np.int64),
            skipped=[],
        )
        result["unlabelled_cells"] = len(cells)
        result["confident_cells"] = sum(len(v) for v in confident.values())
        result["pseudo_labelled"] = dict(Counter(classes[label] for _, label in chosen))
        result["pseudo_label_accuracy"] = float(np.mean([cells.labels[index] == label for index, label in chosen]))
        result["base"] = test_metrics(args.base_model)
        adapted = adapt_model(
            base_dir=args.base_model, data=pseudo, output_dir=scratch / "adapted", name="self-trained", config=config
        )
        result["adapt_seconds"] = round(adapted.seconds, 1)
        result["self_trained"] = test_metrics(scratch / "adapted")
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


if __name__ == "__main__":
    output = main()
    print(json.dumps(output) if "--json" in sys.argv else json.dumps(output, indent=2))
